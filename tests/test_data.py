import shutil

import numpy as np
import pytest

from cxr.data import fingerprint, load_imageset, make_dataset, split_train_val
from cxr.errors import DatasetError
from tests import factory


def test_kaggle_layout_classes_come_from_folders(mini_data):
    images = load_imageset(mini_data, "train")
    assert images.classes == ["COVID19", "NORMAL", "PNEUMONIA"]
    assert images.counts() == {"COVID19": 8, "NORMAL": 8, "PNEUMONIA": 8}
    assert all(not g.startswith("file:") for g in images.groups)  # manifest groups were read


def test_class_order_can_be_fixed(mini_data):
    images = load_imageset(mini_data, "test", ["NORMAL", "COVID19"])
    assert images.classes == ["NORMAL", "COVID19"] and len(images) == 8


def test_bare_folder_of_class_folders(tmp_path):
    for name in ("cats_are_not_xrays", "other"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.png").write_bytes(factory.png_bytes(factory.phantom(80, 80)))
    (tmp_path / "other" / "notes.txt").write_text("ignored")
    images = load_imageset(tmp_path)
    assert images.classes == ["cats_are_not_xrays", "other"] and len(images) == 6
    assert images.groups[0] == "file:0.png"  # no manifest: each file is its own group


@pytest.mark.parametrize("make,words", [
    (lambda p: None, "Cannot find"),
    (lambda p: (p / "train" / "ONLY").mkdir(parents=True), "at least two class"),
    (lambda p: [(p / "train" / c).mkdir(parents=True) for c in ("A", "B")], "No PNG, JPEG or DICOM"),
])
def test_bad_dataset_folders_give_dataset_error(tmp_path, make, words):
    make(tmp_path)
    with pytest.raises(DatasetError, match=words):
        load_imageset(tmp_path, "train")


def test_missing_class_is_reported(mini_data):
    with pytest.raises(DatasetError, match="no folder for class"):
        load_imageset(mini_data, "train", ["COVID19", "CATS"])


def test_validation_split_keeps_patients_together(full_data):
    images = load_imageset(full_data, "train")
    train, val = split_train_val(images, 0.15, seed=0)
    assert len(train) + len(val) == len(images)
    assert not set(train.groups) & set(val.groups)
    assert set(val.labels) == {0, 1, 2}  # stratified: every class is validated
    assert 0.10 < len(val) / len(images) < 0.20


def test_fingerprint_changes_with_content(mini_data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mini_data / "train", copy)
    before = fingerprint(load_imageset(copy))
    assert before == fingerprint(load_imageset(copy))
    victim = next((copy / "NORMAL").iterdir())
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert fingerprint(load_imageset(copy)) != before


def test_pipeline_batches_and_skips_unreadable_files(tmp_path):
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.png").write_bytes(factory.png_bytes(factory.phantom(100, 80)))
    (tmp_path / "B" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    images = load_imageset(tmp_path)
    assert len(images) == 7
    batches = list(make_dataset(images, 48, "crop", batch_size=4))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.shape == (6, 48, 48, 3) and x.dtype == np.float32 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_training_pipeline_augments_but_keeps_shape_and_range(mini_data):
    from cxr.augment import augment_batch

    images = load_imageset(mini_data, "train")
    plain = next(iter(make_dataset(images, 64, "crop", 24)))[0].numpy()
    aug = next(iter(make_dataset(images, 64, "crop", 24, training=True, augment=augment_batch)))[0].numpy()
    assert aug.shape == plain.shape and 0 <= aug.min() and aug.max() <= 255
    assert not np.allclose(np.sort(aug.ravel()), np.sort(plain.ravel()))
