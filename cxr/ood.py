"""Out-of-distribution gate: is this image a chest X-ray like the ones the model was trained on?

A classifier always answers with one of its classes, even for a cat photo. The gate measures how
far an image's pooled features (the layer before the classifier head) lie from the training
images' features: the Mahalanobis distance under a shrunk (Ledoit-Wolf) covariance (Lee et al.
2018), scaled so that 1.0 is the boundary. The boundary sits just above the largest distance seen
on the held-out validation X-rays, so real X-rays are rarely flagged, while photos, documents,
noise and blank images sit far outside. Fitted at the end of training and saved with the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OOD_FILE = "ood.npz"
FEATURE_LAYER = "gap"  # cxrnet's global pooling; other models fall back to their last feature map


def feature_output(model):
    """The tensor the gate looks at: pooled features of the last convolutional stage."""
    import keras

    names = [layer.name for layer in model.layers]
    if FEATURE_LAYER in names:
        return model.get_layer(FEATURE_LAYER).output
    maps = [layer for layer in model.layers if len(layer.output.shape) == 4]
    return keras.layers.GlobalAveragePooling2D()(maps[-1].output)


@dataclass(frozen=True)
class OodGate:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D) inverse of the shrunk covariance
    boundary: float  # Mahalanobis distance that maps to score 1.0

    @classmethod
    def fit(cls, train_features: np.ndarray, val_features: np.ndarray, margin: float = 1.15) -> OodGate:
        """Fit on training features; boundary = `margin` x the 99th percentile of validation distances."""
        from sklearn.covariance import LedoitWolf

        train_features = np.asarray(train_features, np.float64)
        lw = LedoitWolf().fit(train_features)
        gate = cls(lw.location_, lw.precision_, 1.0)
        val = gate.distance(val_features)
        boundary = margin * float(np.quantile(val, 0.99)) if len(val) else margin * float(
            np.quantile(gate.distance(train_features), 0.99))
        return cls(lw.location_, lw.precision_, boundary)

    def distance(self, features: np.ndarray) -> np.ndarray:
        d = np.asarray(features, np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, self.precision, d), 0.0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) scores; above 1.0 means out of distribution."""
        return self.distance(features) / self.boundary

    def save(self, folder: Path) -> None:
        path = Path(folder) / OOD_FILE
        tmp = path.with_name(f".{OOD_FILE}.tmp.npz")
        np.savez(tmp, mean=self.mean, precision=self.precision, boundary=np.float64(self.boundary))
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: Path) -> OodGate | None:
        """The gate saved with a model, or None for models trained before the gate existed."""
        path = Path(folder) / OOD_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["precision"], float(data["boundary"]))
