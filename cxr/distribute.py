"""Where training runs: one device, several devices of one host, or several hosts.

    none          the default: TensorFlow's default device placement (all cores of this CPU)
    mirrored      synchronous data parallelism over the GPUs of one host (or, without GPUs, over
                  the logical CPU devices made by `split_cpu`, which is how the tests exercise it)
    multi-worker  synchronous data parallelism over hosts; each host runs the same command with
                  its own TF_CONFIG (cluster spec and task index), worker 0 is the chief and is the
                  only one that writes the model into the store

The global batch size stays `batch_size`: each of N replicas gets batch_size / N per step.
"""

from __future__ import annotations

import json
import os

from cxr.errors import TrainingError

STRATEGIES = ("none", "mirrored", "multi-worker")


def split_cpu(n: int) -> None:
    """Make `n` logical CPU devices (before TensorFlow creates its devices): mirrored on a CPU."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)


def make_strategy(name: str):
    """The tf.distribute strategy for `name`; `none` gives TensorFlow's default strategy."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if not os.environ.get("TF_CONFIG"):
        raise TrainingError("multi-worker training needs TF_CONFIG (cluster and task) in the environment")
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief() -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster
