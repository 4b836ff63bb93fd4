"""Training under tf.distribute strategies, exercised on this CPU (no GPU needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cxr.distribute import is_chief
from cxr.train import TrainConfig
from tests.conftest import REPO, free_port


def train_cli(store, data, *extra, env=None):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CXR_MODEL_DIR": str(store), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cxr", "train", "--data", str(data), "--epochs", "1",
                           "--image-size", "64", "--batch-size", "8", *extra], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_mirrored_on_two_logical_cpus(tmp_path, mini_data):
    out = train_cli(tmp_path, mini_data, "--strategy", "mirrored", "--cpu-replicas", "2", "--name", "mirrored")
    assert out.returncode == 0, out.stderr
    card = json.loads((tmp_path / "mirrored" / "card.json").read_text())
    assert card["training"]["replicas"] == 2 and card["training"]["config"]["strategy"] == "mirrored"
    assert (tmp_path / "mirrored" / "model.keras").is_file()


def test_multi_worker_with_a_one_worker_cluster(tmp_path, mini_data):
    tf_config = {"cluster": {"worker": [f"localhost:{free_port()}"]}, "task": {"type": "worker", "index": 0}}
    out = train_cli(tmp_path, mini_data, "--strategy", "multi-worker", "--name", "mw",
                    env={"TF_CONFIG": json.dumps(tf_config)})
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "mw" / "card.json").read_text())["training"]["replicas"] == 1


def test_multi_worker_needs_tf_config(tmp_path, mini_data):
    out = train_cli(tmp_path, mini_data, "--strategy", "multi-worker", env={"TF_CONFIG": ""})
    assert out.returncode == 2 and "TF_CONFIG" in out.stderr and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())


def test_only_the_chief_saves(monkeypatch):
    cluster = {"worker": ["a:1", "b:1"]}
    for task, chief in [({"type": "worker", "index": 0}, True), ({"type": "worker", "index": 1}, False)]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert is_chief() is chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], **cluster},
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief()
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief()


def test_unknown_strategy_is_rejected(mini_data):
    with pytest.raises(ValueError, match="strategy"):
        TrainConfig(data=mini_data, strategy="parameter-server")
