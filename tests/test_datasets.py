import pytest

from cxr.datasets import confine, list_datasets
from cxr.errors import DatasetError
from tests import factory


def _make_dataset(folder):
    for split in ("train", "test"):
        for name in ("COVID19", "NORMAL"):
            (folder / split / name).mkdir(parents=True)
            (folder / split / name / "a.png").write_bytes(factory.png_bytes(factory.phantom(80, 80)))


def test_lists_only_dataset_folders_inside_the_root(tmp_path):
    root = tmp_path / "root"
    _make_dataset(root / "set-a")
    _make_dataset(root / "group" / "set-b")
    (root / "empty").mkdir()
    assert sorted(p.name for p in list_datasets(root)) == ["set-a", "set-b"]


def test_symlink_escaping_the_root_is_not_listed(tmp_path):
    outside = tmp_path / "secret"
    _make_dataset(outside)
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert list_datasets(root) == []
    with pytest.raises(DatasetError, match="outside"):
        confine(root, root / "link")


@pytest.mark.parametrize("candidate", ["..", "../..", "/etc", "a/../../x"])
def test_confine_refuses_paths_out_of_the_root(tmp_path, candidate):
    (tmp_path / "root" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="outside"):
        confine(tmp_path / "root", candidate)


def test_confine_accepts_a_folder_inside(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    assert confine(tmp_path / "root", "a") == (tmp_path / "root" / "a").resolve()
