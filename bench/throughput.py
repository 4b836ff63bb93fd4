"""Training and inference throughput against this CPU's FLOP ceiling, and training memory; JSON.

    python bench/throughput.py [--model NAME_OR_PATH] [--data DIR] [--mini DIR] [--experiments]

In one run on one machine:
  peak_gflops              a large fp32 matmul through TensorFlow (the practical ceiling)
  model_gflop_per_img      forward FLOPs of the model at its input size, from the layer shapes
  train_img_per_s          the real training step fed by the real pipeline (JPEGs from disk,
                           decode, source cues, fused augmentation), median epoch after the first
  infer_img_per_s          Predictor.infer_imageset over the test split (second pass)
  *_fraction_of_limit      img/s x FLOPs per image (x3 for training) / peak
  peak_rss_mb              a whole `cxr.train.train` run (1 epoch) on the mini and on the full set,
                           each in its own process
  breakdown                the same step on in-memory tensors (compute only) and the pipeline alone
--experiments adds the variants tried (XLA, bfloat16, thread counts, batch size), each in its own
process. Every training figure comes from a child process, so thread settings can differ.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve()
VARIANTS = {
    "default": {},
    "xla_jit_compile": {"jit": True},
    "mixed_bfloat16": {"bf16": True},
    "intra_op_1_inter_op_2": {"intra": 1, "inter": 2},
    "intra_op_2_inter_op_1": {"intra": 2, "inter": 1},
    "batch_64": {"batch": 64},
    "onednn_off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    # The published reference CNN (wide convolutions at 256 px, no batch norm), same pipeline:
    # shows how much of the gap to the ceiling is the shape of the network, not the code around it.
    "reference_cnn_seed_256": {"arch": "seed"},
}


def cpu_description() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"model": model, "logical_cpus": os.cpu_count(),
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags}


def peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Median GFLOP/s of an n x n fp32 matmul (2 n^3 FLOPs), the ceiling dense conv work can reach."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        matmul().numpy()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def _configure_threads(intra: int | None, inter: int | None) -> None:
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def child_train(data: Path, model_dir: Path, n_images: int, epochs: int, variant: dict) -> dict:
    """Steady-state training img/s of the real pipeline + step, and of each part alone."""
    _configure_threads(variant.get("intra"), variant.get("inter"))
    import keras
    import numpy as np
    import tensorflow as tf

    from cxr.card import ModelCard
    from cxr.data import load_imageset, split_train_val
    from cxr.train import TrainConfig, class_weights, compiled_model, training_datasets

    if variant.get("bf16"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    card = ModelCard.load(model_dir)
    arch = variant.get("arch", card.arch)
    config = TrainConfig(data=data, arch=arch, image_size=None if arch != card.arch else card.image_size,
                         resize_policy=card.resize_policy,
                         batch_size=variant.get("batch", 32),
                         source_cues=card.training.get("config", {}).get("source_cues", 0.0))
    images = load_imageset(data, "train", card.classes)
    train_set, _ = split_train_val(images, config.val_fraction, config.seed)
    subset = train_set.subset(np.random.default_rng(0).permutation(len(train_set))[:n_images])
    train_ds, _ = training_datasets(config, subset, subset)
    model = compiled_model(config, len(card.classes))
    from cxr.flops import model_flops

    gflop = sum(model_flops(model).values()) / 1e9
    if variant.get("jit"):
        model.compile(model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=True)

    def epoch_times(ds, n_epochs) -> list[float]:
        stamps = []
        timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: stamps.append(time.perf_counter()),
                                               on_epoch_end=lambda e, logs: stamps.append(time.perf_counter()))
        model.fit(ds, epochs=n_epochs, verbose=0, callbacks=[timer],
                  class_weight=class_weights(subset.labels, len(card.classes)))
        return [stamps[i + 1] - stamps[i] for i in range(0, len(stamps), 2)]

    full = epoch_times(train_ds, epochs)
    # Compute alone: the same steps on one batch held in memory.
    x, y = next(iter(train_ds))
    steps = max(1, len(subset) // config.batch_size)
    cached = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    compute = epoch_times(cached, 3)
    # Pipeline alone: read, decode, degrade, augment, batch; no model.
    start = time.perf_counter()
    seen = sum(int(b[0].shape[0]) for b in train_ds)
    pipeline_s = time.perf_counter() - start
    per_epoch = statistics.median(full[1:]) if len(full) > 1 else full[0]
    return {
        "train_img_per_s": len(subset) / per_epoch,
        "epoch_seconds": [round(t, 2) for t in full],
        "compute_only_img_per_s": steps * int(x.shape[0]) / statistics.median(compute[1:]),
        "pipeline_only_img_per_s": seen / pipeline_s,
        "n_images": len(subset), "batch_size": config.batch_size, "arch": arch, "image_size": config.image_size,
        "model_gflop_per_img": round(gflop, 4),
    }


def child_rss(data: Path) -> dict:
    """Peak RSS of one real training run (1 epoch, whole `train()` incl. finalize) on `data`."""
    from cxr.store import ModelStore
    from cxr.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as store:
        started = time.perf_counter()
        saved = train(TrainConfig(data=data, epochs=1, name="rss"), ModelStore(Path(store)))
        n = saved.card.training["data"]["n_train"]
        seconds = time.perf_counter() - started
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n_train": n,
            "seconds": round(seconds, 1)}


def run_child(*args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, str(HERE), *args], capture_output=True, text=True, timeout=1800,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def infer_throughput(model_path: Path, data: Path) -> dict:
    import numpy as np

    from cxr.data import load_imageset
    from cxr.predict import Predictor

    predictor = Predictor.from_path(model_path)
    images = load_imageset(data, "test", predictor.classes)
    predictor.infer_imageset(images)  # warm-up: traces the function, fills the page cache
    times = []
    for _ in range(2):
        start = time.perf_counter()
        predictor.infer_imageset(images)
        times.append(time.perf_counter() - start)
    out = {"infer_img_per_s": len(images) / min(times), "n_images": len(images)}
    size = predictor.card.image_size
    for batch in (32, 128):
        x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        predictor.infer(x)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            predictor.infer(x)
            runs.append(time.perf_counter() - start)
        out[f"compute_only_batch_{batch}_img_per_s"] = batch / statistics.median(runs)
    return out


def main() -> None:
    from bench.common import add_json_flag
    from cxr.config import get_paths

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the active model")
    parser.add_argument("--data", type=Path, default=get_paths().data_root / "cxr-data")
    parser.add_argument("--mini", type=Path, default=get_paths().data_root / "cxr-data-mini")
    parser.add_argument("--train-images", type=int, default=320, help="training images per measured epoch")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs (the first is warm-up)")
    parser.add_argument("--experiments", action="store_true", help="also time the variants tried")
    parser.add_argument("--no-rss", action="store_true", help="skip the two memory runs")
    parser.add_argument("--child", choices=["train", "rss"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    add_json_flag(parser)
    args = parser.parse_args()

    from cxr.cli import resolve_model_path

    model_dir = resolve_model_path(args.model)
    if args.child == "train":
        print(json.dumps(child_train(args.data, model_dir, args.train_images, args.epochs, VARIANTS[args.variant])))
        return
    if args.child == "rss":
        print(json.dumps(child_rss(args.data)))
        return

    from cxr.card import ModelCard
    from cxr.flops import model_flops
    from cxr.store import load_model

    common = ["--model", str(model_dir), "--data", str(args.data), "--train-images", str(args.train_images),
              "--epochs", str(args.epochs)]
    card = ModelCard.load(model_dir)
    gflop = sum(model_flops(load_model(model_dir)[0]).values()) / 1e9
    peak = peak_gflops()
    train = run_child("--child", "train", *common)
    infer = infer_throughput(model_dir, args.data)
    peak_after = peak_gflops()  # the machine is shared: a second reading shows how steady it was
    result = {
        "model": card.name, "arch": card.arch, "image_size": card.image_size, "cpu": cpu_description(),
        "peak_gflops": round(max(peak, peak_after), 1), "peak_gflops_readings": [round(peak, 1), round(peak_after, 1)],
        "model_gflop_per_img": round(gflop, 4), "train_gflop_per_img": round(3 * gflop, 4),
    }
    limit = result["peak_gflops"]
    if "error" not in train:
        result["train_img_per_s"] = round(train["train_img_per_s"], 1)
        result["train_fraction_of_limit"] = round(train["train_img_per_s"] * 3 * gflop / limit, 3)
    result["infer_img_per_s"] = round(infer["infer_img_per_s"], 1)
    result["infer_fraction_of_limit"] = round(infer["infer_img_per_s"] * gflop / limit, 3)
    best_infer = max(infer["compute_only_batch_32_img_per_s"], infer["compute_only_batch_128_img_per_s"])
    result["breakdown"] = {
        "train": train,
        "train_compute_only_fraction_of_limit": round(train.get("compute_only_img_per_s", 0) * 3 * gflop / limit, 3),
        "infer": infer,
        "infer_compute_only_fraction_of_limit": round(best_infer * gflop / limit, 3),
    }
    if not args.no_rss:
        mini = run_child("--child", "rss", "--model", str(model_dir), "--data", str(args.mini))
        full = run_child("--child", "rss", "--model", str(model_dir), "--data", str(args.data))
        result["peak_rss_mb"] = {"mini": mini, "full": full}
        if "error" not in mini and "error" not in full:
            result["peak_rss_full_over_mini"] = round(full["peak_rss_mb"] / mini["peak_rss_mb"], 3)
    if args.experiments:
        result["experiments"] = {
            name: run_child("--child", "train", "--variant", name, *common, env=VARIANTS[name].get("env"))
            for name in VARIANTS if name != "default"
        }
        for r in result["experiments"].values():
            if "train_img_per_s" in r:
                r["speed_vs_default"] = round(r["train_img_per_s"] / train.get("train_img_per_s", float("nan")), 3)
                r["train_fraction_of_limit"] = round(r["train_img_per_s"] * 3 * r["model_gflop_per_img"] / limit, 3)
                r["compute_only_fraction_of_limit"] = round(
                    r["compute_only_img_per_s"] * 3 * r["model_gflop_per_img"] / limit, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
