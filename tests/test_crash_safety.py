"""`train --activate` killed with SIGKILL at any moment leaves the active model intact."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxr.store import ModelStore, load_model

REPO = Path(__file__).resolve().parent.parent


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def start_training(store: Path, data: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "CXR_MODEL_DIR": str(store), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "cxr", "train", "--data", str(data), "--epochs", "2", "--image-size", "64",
         "--batch-size", "8", "--name", name, "--activate"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.timeout(600)
def test_sigkill_during_training_never_breaks_the_active_model(tmp_path, tiny_model, mini_data):
    store_dir = tmp_path / "models"
    shutil.copytree(tiny_model, store_dir / "original")
    store = ModelStore(store_dir)
    store.activate("original")
    before = digest(store_dir / "original")

    # One uninterrupted run tells how long a whole run takes here ...
    started = time.monotonic()
    assert start_training(store_dir, mini_data, "complete").wait(timeout=300) == 0
    duration = time.monotonic() - started
    store.activate("original")

    # ... then kill runs at points spread over that time, most near the end, where it saves.
    for i, fraction in enumerate((0.2, 0.5, 0.75, 0.85, 0.9, 0.95, 0.98)):
        proc = start_training(store_dir, mini_data, f"killed{i}")
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        active = store.active_name()
        model, card = load_model(store.active_path())  # still loadable
        assert model.output_shape == (None, 3)
        if active == "original":
            assert digest(store_dir / "original") == before
        else:  # the run finished before the kill: then it is complete and was activated whole
            assert active == f"killed{i}"
            store.activate("original")
        # Nothing half-written is listed: every visible model loads.
        for stored in store.list():
            load_model(stored.path)
        listed = {m.name for m in store.list()}
        visible = {p.name for p in store_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
        assert visible == listed
    assert digest(store_dir / "original") == before
