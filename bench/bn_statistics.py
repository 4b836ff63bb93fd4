"""How a model's validation figures move when its batch-norm statistics are recomputed; prints JSON.

    python bench/bn_statistics.py [--model NAME_OR_PATH] [--data DIR] [--batches N]

Training normalises each batch by its own statistics, and the batches are augmented: geometry and
intensity jitter, and figure cues on half the images. Serving normalises by stored statistics. This
scores the validation split the card records (one view, the raw model, no temperature) three ways:
with the statistics as saved; recomputed as `--precise-bn` recomputes them, from N augmented training
batches (`cxr.precise_bn`); and recomputed from N training batches with no augmentation and no cues.
If the augmented statistics cost validation accuracy that the clean ones keep, the normalisation
itself carries the augmentation's shift, and a run that validates or fine-tunes with them starts
below the model it came from. Validation only: no test image.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    from bench.common import model_and_recorded_split
    from cxr.precise_bn import batch_norm_layers, recompute_statistics
    from cxr.train import TrainConfig, statistics_batches, training_datasets

    def add_arguments(parser):
        parser.add_argument("--batches", type=int, default=10,
                            help="training batches per recomputation (training's default)")

    predictor, train_set, val_set, args = model_and_recorded_split(__doc__.splitlines()[0], argv, add_arguments)
    card = predictor.card
    recorded = card.training.get("config", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        config = TrainConfig(**{**{k: v for k, v in recorded.items() if k in fields}, "data": str(args.data),
                                "image_size": card.image_size, "resize_policy": card.resize_policy})
    except (TypeError, ValueError) as e:  # a card from a version whose training settings no longer validate
        sys.exit(f"bn_statistics.py: the training settings {card.name}'s card records cannot be rebuilt: {e}")
    augmented, val_ds = training_datasets(config, train_set, val_set)
    # Shuffled like training, but neither augmented nor degraded: what `--precise-bn-source clean` averages.
    clean = statistics_batches(dataclasses.replace(config, precise_bn_source="clean"), train_set, augmented)
    model = predictor.model
    layers = batch_norm_layers(model)
    saved = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in layers]
    labels = np.asarray(val_set.labels)

    def scored() -> dict:
        probs = np.asarray(model.predict(val_ds, verbose=0), np.float64)
        if card.binary:  # a sigmoid head scores the second class only
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        called = probs.argmax(axis=1)
        p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
        return {"accuracy": round(float((called == labels).mean()), 4),
                "log_loss": round(float(-np.log(p_true).mean()), 4),
                "called": {name: int((called == k).sum()) for k, name in enumerate(card.classes)}}

    out = {"model": card.name, "data": str(args.data), "batches": args.batches, "batch_norm_layers": len(layers),
           "validation": {name: int((labels == k).sum()) for k, name in enumerate(card.classes)},
           "saved": scored()}
    for name, batches in (("recomputed_augmented", augmented), ("recomputed_clean", clean)):
        for layer, (mean, var) in zip(layers, saved, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(var)
        recompute_statistics(model, batches.take(args.batches))
        out[name] = scored()
        out[name]["mean_shift"] = round(float(np.mean([np.abs(layer.moving_mean.numpy() - mean).mean()
                                                       / (np.abs(mean).mean() + 1e-9)
                                                       for layer, (mean, _) in zip(layers, saved, strict=True)])), 4)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
