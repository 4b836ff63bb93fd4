"""Serving: a loaded model + its card -> class probabilities for images, files or datasets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cxr.card import ModelCard
from cxr.data import ImageSet, load_imageset, make_dataset
from cxr.decode import decode_image
from cxr.errors import CxrError
from cxr.metrics import classification_metrics
from cxr.preprocess import resize_square, to_model_input
from cxr.store import load_model


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Soften (T > 1) or sharpen (T < 1) probabilities as if the logits were divided by T."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


class Predictor:
    """Holds a model and its card; call `predict_proba` on decoded uint8 grayscale images."""

    def __init__(self, model, card: ModelCard):
        import tensorflow as tf

        self.model = model
        self.card = card
        # A tf.function call costs ~1-3 ms for one image where model.predict costs ~35 ms.
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @classmethod
    def from_path(cls, path: str | Path) -> Predictor:
        return cls(*load_model(Path(path)))

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def prepare(self, img: np.ndarray) -> np.ndarray:
        """(H, W) uint8 -> (S, S) uint8 at the model's input size."""
        return resize_square(img, self.card.image_size, self.card.resize_policy)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Model input (N, S, S, 3) float32 -> calibrated probabilities (N, C)."""
        out = np.asarray(self._forward(np.asarray(x, np.float32)), dtype=np.float64)
        if self.card.binary:
            out = np.concatenate([1.0 - out, out], axis=1)
        return apply_temperature(out, self.card.temperature)

    def predict_proba(self, imgs: Iterable[np.ndarray]) -> np.ndarray:
        """Decoded (H, W) uint8 images -> (N, C) probabilities in `classes` order."""
        prepared = np.stack([self.prepare(img) for img in imgs])
        return self.predict_batch(to_model_input(prepared))

    def predict_file(self, src: bytes | str | Path, name: str = "") -> dict:
        """One file -> {"file", "label", "probabilities"}; raises InvalidImageError if unusable."""
        probs = self.predict_proba([decode_image(src, name=name)])[0]
        return self.result(name or str(src), probs)

    def result(self, file: str, probs: np.ndarray) -> dict:
        return {
            "file": file,
            "label": self.classes[int(np.argmax(probs))],
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probs, strict=False)},
        }

    def predict_files(self, files: Iterable[str | Path]) -> Iterator[dict]:
        """Each file -> its result or {"file", "error"}; one bad file never stops the others."""
        for file in files:
            try:
                yield self.predict_file(file)
            except CxrError as exc:
                yield {"file": str(file), "error": str(exc)}

    def predict_imageset(self, images: ImageSet, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Stream a labelled set through tf.data -> (probs (N, C), labels (N,))."""
        ds = make_dataset(images, self.card.image_size, self.card.resize_policy, batch_size)
        probs, labels = [], []
        for x, y in ds:
            probs.append(self.predict_batch(x))
            labels.append(y.numpy())
        if not probs:
            return np.zeros((0, len(self.classes))), np.zeros((0,), np.int64)
        return np.concatenate(probs), np.concatenate(labels)

    def evaluate(self, data: str | Path, split: str | None) -> tuple[ImageSet, np.ndarray, np.ndarray, dict]:
        """Metrics on a labelled folder (`split` of `data`) -> (images, probs, labels, metrics)."""
        images = load_imageset(data, split, self.classes)
        probs, labels = self.predict_imageset(images)
        metrics = classification_metrics(probs, labels, self.classes, self.card.covid_threshold)
        return images, probs, labels, metrics
