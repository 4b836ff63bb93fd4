"""Shared fixtures. Real data comes from CXR_DATA_ROOT (default: ../shared beside the checkout)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
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


REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Flags for a closed network: without the background-networking ones chromium keeps dialling out.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(app_env, tmp_path):
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture()
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
