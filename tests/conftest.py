"""Shared fixtures. Real data comes from CXR_DATA_ROOT (default: ../shared beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cxr.config import get_paths  # noqa: E402


def _dataset(name: str) -> Path:
    path = get_paths().data_root / name
    if not path.is_dir():
        # Fail, not skip: a suite that silently skips its data tests proves nothing.
        pytest.fail(f"dataset {name} not found under CXR_DATA_ROOT={get_paths().data_root}")
    return path


@pytest.fixture(scope="session")
def mini_data() -> Path:
    return _dataset("cxr-data-mini")


@pytest.fixture(scope="session")
def full_data() -> Path:
    return _dataset("cxr-data")


@pytest.fixture()
def store_dir(tmp_path, monkeypatch) -> Path:
    """An empty model store for one test, also seen by the CLI through CXR_MODEL_DIR."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("CXR_MODEL_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, mini_data) -> Path:
    """A real 3-class model trained for 2 epochs on the mini set (shared by the slow tests)."""
    from cxr.store import ModelStore
    from cxr.train import TrainConfig, train

    store = ModelStore(tmp_path_factory.mktemp("store"))
    config = TrainConfig(data=mini_data, epochs=2, image_size=96, batch_size=8, name="tiny")
    return train(config, store).path


@pytest.fixture()
def app_env(tmp_path, monkeypatch, tiny_model, mini_data):
    """A model store holding the tiny model as DEFAULT and a data root holding the mini set."""
    import shutil

    store = tmp_path / "models"
    shutil.copytree(tiny_model, store / tiny_model.name)
    (store / "DEFAULT").write_text(tiny_model.name + "\n")
    data_root = tmp_path / "data"
    shutil.copytree(mini_data, data_root / "cxr-data-mini")
    monkeypatch.setenv("CXR_MODEL_DIR", str(store))
    monkeypatch.setenv("CXR_DATA_ROOT", str(data_root))
    return {"store": store, "data_root": data_root, "mini": data_root / "cxr-data-mini"}
