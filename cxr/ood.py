"""Out-of-distribution gate: is this image a chest X-ray like the ones the model was trained on?

A classifier always answers with one of its classes, even for a cat photo. The gate measures how
far an image's features lie from the training images' features: the Mahalanobis distance under a
shrunk (Ledoit-Wolf) covariance (Lee et al. 2018), scaled so that 1.0 is the boundary.

The features are the global averages of the end of every convolutional stage from an eighth of
the input's side down (the input of each down-sampling layer) and of the final pooled features:
middle stages see structure and texture, which set photos, documents and noise apart; the last
sees anatomy (Lee et al.'s feature ensemble).
The gate is fitted on the training X-rays both as they are and with journal-figure cues (crops,
letters, arrows, JPEG, borders), and its boundary sits just above the largest distances seen on
the held-out validation X-rays, clean and figure-like: a cropped, lettered or re-compressed chest
X-ray is still a chest X-ray. Fitted at the end of training and saved with the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.ensemble import PREFIX, member_count

OOD_FILE = "ood.npz"
FINAL_LAYER = "gap"  # cxrnet's global pooling; other models use their last feature map


def _final_layer(model, layers: list | None = None) -> str:
    layers = model.layers if layers is None else layers
    for layer in layers:
        if layer.name.endswith(FINAL_LAYER) and layer.name.removesuffix(FINAL_LAYER) in ("", PREFIX.format(0)):
            return layer.name
    return [layer.name for layer in layers if len(layer.output.shape) == 4][-1]


def _gated_layers(model) -> list:
    """The layers a gate may read: all of a single model's; the first member's of an ensemble
    (cxr.ensemble), so an ensemble built around a model keeps that model's gate."""
    if member_count(model) == 0:
        return list(model.layers)
    return [layer for layer in model.layers if layer.name.startswith(PREFIX.format(0))]


def feature_layers(model) -> tuple[str, ...]:
    """The layers a new gate reads: the end of every stage (whatever feeds a pooling layer) at an
    eighth of the input's side or coarser, and the final features.

    Finer stages respond to pixel texture (JPEG blocks, noise, downscaling), which differs between
    hospitals and journals and must not make a chest X-ray "unknown"; with them, the gate let more
    photographs through on one of three models measured (models/README.md).
    """
    import keras

    side = model.inputs[0].shape[1]
    layers = _gated_layers(model)
    producers = {id(layer.output): layer for layer in layers}
    ends = []
    for layer in layers:
        if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
            source = producers.get(id(layer.input))
            if source is not None and source.name not in ends and source.output.shape[1] * 8 <= side:
                ends.append(source.name)
    final = _final_layer(model, layers)
    return tuple(n for n in ends if n != final) + (final,)


def legacy_layers(model) -> tuple[str, ...]:
    """What gates saved before the feature ensemble read: the final pooled features alone."""
    return (_final_layer(model),)


def feature_output(model, layers: tuple[str, ...] | None = None):
    """The tensor the gate looks at: the named layers (default `feature_layers`), each globally
    averaged if it is a feature map, side by side."""
    import keras

    outputs = [model.get_layer(name).output for name in (layers or feature_layers(model))]
    pooled = [keras.layers.GlobalAveragePooling2D()(o) if len(o.shape) == 4 else o for o in outputs]
    return pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled)


@dataclass(frozen=True)
class OodGate:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D) inverse of the shrunk covariance
    boundary: float  # Mahalanobis distance that maps to score 1.0
    layers: tuple[str, ...] | None = None  # the layers whose features it reads; None: legacy_layers

    @classmethod
    def fit(cls, train_features: np.ndarray, val_features: np.ndarray, margin: float = 1.15,
            layers: tuple[str, ...] | None = None) -> OodGate:
        """Fit on training features; boundary = `margin` x the 99th percentile of validation distances."""
        from sklearn.covariance import LedoitWolf

        train_features = np.asarray(train_features, np.float64)
        lw = LedoitWolf().fit(train_features)
        gate = cls(lw.location_, lw.precision_, 1.0)
        val = gate.distance(val_features)
        boundary = margin * float(np.quantile(val, 0.99)) if len(val) else margin * float(
            np.quantile(gate.distance(train_features), 0.99))
        return cls(lw.location_, lw.precision_, boundary, tuple(layers) if layers else None)

    def distance(self, features: np.ndarray) -> np.ndarray:
        d = np.asarray(features, np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, self.precision, d), 0.0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) scores; above 1.0 means out of distribution."""
        return self.distance(features) / self.boundary

    def save(self, folder: Path) -> None:
        path = Path(folder) / OOD_FILE
        tmp = path.with_name(f".{OOD_FILE}.tmp.npz")
        extra = {"layers": np.array(self.layers, dtype=str)} if self.layers else {}
        np.savez(tmp, mean=self.mean, precision=self.precision, boundary=np.float64(self.boundary), **extra)
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: Path) -> OodGate | None:
        """The gate saved with a model, or None for models trained before the gate existed."""
        path = Path(folder) / OOD_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            layers = tuple(str(n) for n in data["layers"]) if "layers" in data.files else None
            return cls(data["mean"], data["precision"], float(data["boundary"]), layers)


def describe(card) -> str | None:
    """One line on a model's gate for the app, from what its card records (None if nothing is)."""
    info = card.metrics.get("ood")
    if not info:
        return None
    text = (f"Mahalanobis distance over the pooled features of {len(info['layers'])} layers "
            f"({', '.join(info['layers'])}), fitted on the {info['fitted_on']}.")
    if info.get("validation_flagged") is not None:
        text += f" It flags {info['validation_flagged']:.1%} of the validation X-rays"
        if info.get("validation_figure_like_flagged") is not None:
            text += f" and {info['validation_figure_like_flagged']:.1%} of their figure-like copies"
        text += "; above 1.0 is flagged."
    return text
