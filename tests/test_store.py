import os

import pytest

from cxr.card import ModelCard
from cxr.errors import ModelError
from cxr.model import build_model
from cxr.store import ACTIVE_FILE, DEFAULT_FILE, ModelStore, load_model


def _card(name, created="2026-01-01T00:00:00+00:00"):
    return ModelCard(name=name, arch="cxrnet", classes=["COVID19", "NORMAL", "PNEUMONIA"], image_size=64,
                     created=created)


@pytest.fixture(scope="module")
def small_model():
    return build_model("cxrnet", 3, 64)


def test_save_then_list_and_load(tmp_path, small_model):
    store = ModelStore(tmp_path)
    saved = store.save(small_model, _card("a"))
    assert [m.name for m in store.list()] == ["a"]
    model, card = load_model(saved.path)
    assert card.name == "a" and model.output_shape == (None, 3)


def test_list_ignores_staging_and_incomplete_folders(tmp_path, small_model):
    store = ModelStore(tmp_path)
    store.save(small_model, _card("good"))
    (tmp_path / ".staging-abc").mkdir()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.keras").write_bytes(b"partial")
    assert [m.name for m in store.list()] == ["good"]
    store.clean_staging()
    assert not (tmp_path / ".staging-abc").exists()


def test_failed_save_leaves_nothing_visible(tmp_path, small_model, monkeypatch):
    store = ModelStore(tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ModelCard, "save", boom)
    with pytest.raises(RuntimeError):
        store.save(small_model, _card("x"))
    assert store.list() == [] and not any(tmp_path.iterdir())


def test_save_refuses_existing_name_and_bad_names(tmp_path, small_model):
    store = ModelStore(tmp_path)
    store.save(small_model, _card("a"))
    with pytest.raises(ModelError, match="already exists"):
        store.save(small_model, _card("a"))
    with pytest.raises(ModelError, match="valid model name"):
        store.save(small_model, _card("../escape"))


def test_active_falls_back_to_default_then_follows_activate(tmp_path, small_model):
    store = ModelStore(tmp_path)
    for name in ("shipped", "mine"):
        store.save(small_model, _card(name))
    with pytest.raises(ModelError, match="No active model"):
        store.active_name()
    (tmp_path / DEFAULT_FILE).write_text("shipped\n")
    assert store.active_name() == "shipped"
    store.activate("mine")
    assert store.active_name() == "mine"
    assert (tmp_path / ACTIVE_FILE).read_text().strip() == "mine"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".ACTIVE")]  # no temp left


def test_activate_refuses_unknown_model(tmp_path):
    with pytest.raises(ModelError, match="No complete model"):
        ModelStore(tmp_path).activate("ghost")


def test_active_pointer_to_deleted_model_falls_back_to_default(tmp_path, small_model):
    store = ModelStore(tmp_path)
    store.save(small_model, _card("shipped"))
    (tmp_path / DEFAULT_FILE).write_text("shipped\n")
    (tmp_path / ACTIVE_FILE).write_text("deleted-one\n")
    assert store.active_name() == "shipped"


def test_delete_removes_a_model_but_never_the_active_or_shipped_one(tmp_path, small_model):
    store = ModelStore(tmp_path)
    for name in ("shipped", "mine", "old"):
        store.save(small_model, _card(name))
    (tmp_path / DEFAULT_FILE).write_text("shipped\n")
    store.activate("mine")
    store.delete("old")
    assert sorted(m.name for m in store.list()) == ["mine", "shipped"]
    assert not (tmp_path / "old").exists() and not list(tmp_path.glob(".staging-*"))
    with pytest.raises(ModelError, match="is the active model"):
        store.delete("mine")
    store.activate("shipped")
    with pytest.raises(ModelError, match="shipped default"):
        store.delete("shipped")
    with pytest.raises(ModelError, match="No complete model"):
        store.delete("old")
    with pytest.raises(ModelError, match="not a valid model name"):
        store.delete("../mine")
    store.delete("mine")  # no longer active
    assert [m.name for m in store.list()] == ["shipped"]


def test_members_of_the_shipped_ensemble_are_kept_with_it(tmp_path, small_model):
    store = ModelStore(tmp_path)
    ensemble = _card("shipped")
    ensemble.training["ensemble_of"] = [{"name": "member"}, {"name": "elsewhere"}, {"name": "../escape"}]
    store.save(small_model, ensemble)
    for name in ("member", "other"):
        store.save(small_model, _card(name))
    assert store.shipped_members() == set()  # no DEFAULT yet: nothing is shipped
    (tmp_path / DEFAULT_FILE).write_text("shipped\n")
    # Only members that are in this store count; "elsewhere" was never stored here.
    assert store.shipped_members() == {"member"}
    with pytest.raises(ModelError, match="member of the shipped model shipped"):
        store.delete("member")
    assert (tmp_path / "member" / "model.keras").is_file()
    store.delete("other")
    assert sorted(m.name for m in store.list()) == ["member", "shipped"]
