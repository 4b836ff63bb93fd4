"""Serving: a loaded model + its card -> class probabilities for images, files or datasets."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from cxr.card import ModelCard
from cxr.data import IMAGE_SUFFIXES, ImageSet, load_imageset, make_dataset, prepare_decoded
from cxr.decode import decode_image
from cxr.errors import CxrError
from cxr.metrics import classification_metrics
from cxr.ood import OodGate, feature_layers, feature_output, legacy_layers
from cxr.preprocess import LUNG_POLICIES, model_view_stacks, prepare_image, to_model_input
from cxr.store import load_model
from cxr.views import average, check_views

log = logging.getLogger(__name__)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Soften (T > 1) or sharpen (T < 1) probabilities as if the logits were divided by T."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


class Predictor:
    """Holds a model, its card and its OOD gate; call `predict_proba` on decoded uint8 grayscale images."""

    def __init__(self, model, card: ModelCard, gate: OodGate | None = None):
        import keras
        import tensorflow as tf

        self.model = model
        self.card = card
        self.gate = gate
        self.views = check_views(card.test_time_views)  # [] = one view: the box itself
        # One pass gives both the probabilities and the pooled features the OOD gate scores: the
        # layers its gate was fitted on (a gate saved before it recorded them read the final
        # features alone); without a gate, the layers a new gate is fitted on.
        self.feature_layers = (gate.layers or legacy_layers(model)) if gate is not None else feature_layers(model)
        both = keras.Model(model.inputs, [model.output, feature_output(model, self.feature_layers)])
        # A tf.function call costs ~1-3 ms for one image where model.predict costs ~35 ms.
        self._forward = tf.function(lambda x: both(x, training=False), reduce_retracing=True)

    @classmethod
    def from_path(cls, path: str | Path) -> Predictor:
        predictor = cls(*load_model(Path(path)), OodGate.load(Path(path)))
        predictor.check_lung_segmenter()
        return predictor

    def check_lung_segmenter(self) -> bool:
        """Warn if a lung-box model is served by another segmenter than the one it was trained with."""
        trained = self.card.training.get("lung_segmenter", {}).get("sha256")
        if self.card.resize_policy not in LUNG_POLICIES or not trained:
            return True
        from cxr.lungs import default_segmenter

        serving = default_segmenter().info.get("sha256")
        if serving != trained:
            log.warning("%s was trained with lung segmenter %s but is served by %s; its lung boxes may differ",
                        self.card.name, trained[:12], (serving or "?")[:12])
            return False
        return True

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def prepare(self, img: np.ndarray) -> np.ndarray:
        """(H, W) uint8 -> (S, S) uint8 at the model's input size."""
        return prepare_image(img, self.card.image_size, self.card.resize_policy)

    def stacks(self, imgs: list[np.ndarray]) -> list[np.ndarray]:
        """What `infer_views` takes for decoded (H, W) uint8 images: each one's (S, S) view, or with the
        card's test-time views, its (K, S, S) stack of them (`cxr.views`)."""
        if not self.views:
            return [self.prepare(img) for img in imgs]
        return [stack for stack, _ in model_view_stacks(list(imgs), self.card.image_size, self.card.resize_policy,
                                                        self.views)]

    def view_stack(self, img: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """((K, S, S) uint8 views `infer` scores one decoded image from, K = 1 without test-time views;
        the box of the original view 0 comes from). One segmenter pass gives both what the model
        scores and what saliency explains (view 0)."""
        return model_view_stacks([img], self.card.image_size, self.card.resize_policy, self.views)[0]

    def model_input(self, img: np.ndarray) -> np.ndarray:
        """One decoded (H, W) uint8 image -> the batch `infer` scores it from: (1, K, S, S, 3)."""
        return to_model_input(self.view_stack(img)[0][None])

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model input (N, S, S, 3) float32 -> (calibrated probabilities (N, C), features (N, D)).

        Given (N, K, S, S, 3), K views of each image, the probabilities are the softmax of the views'
        mean logits and the features are view 0's (the box itself, which the OOD gate was fitted on).
        """
        out, features = self._forward_views(x)
        probs = out[:, 0] if out.shape[1] == 1 else average(out.reshape(-1, out.shape[-1]), out.shape[1])
        return apply_temperature(probs, self.card.temperature), features[:, 0]

    def _forward_views(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) or (N, K, S, S, 3) float32 -> (the network's own probabilities (N, K, C), before
        averaging and temperature; features (N, K, D))."""
        x = np.asarray(x, np.float32)
        count = x.shape[1] if x.ndim == 5 else 1
        out, features = self._forward(x.reshape(-1, *x.shape[-3:]))
        out = np.asarray(out, dtype=np.float64)
        if self.card.binary:
            out = np.concatenate([1.0 - out, out], axis=1)
        features = np.asarray(features, np.float64)
        return out.reshape(-1, count, out.shape[-1]), features.reshape(-1, count, features.shape[-1])

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Model input (N, S, S, 3) (or (N, K, S, S, 3), see `infer`) float32 -> calibrated probabilities (N, C)."""
        return self.infer(x)[0]

    def ood_scores(self, features: np.ndarray) -> np.ndarray | None:
        """(N,) OOD scores (> 1: not like the training X-rays), or None for a model without a gate."""
        return None if self.gate is None else self.gate.score(features)

    def infer_images(self, imgs: Iterable[np.ndarray], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (H, W) uint8 images -> (probabilities (N, C), features (N, D)), `batch_size` at a time.
        Reads `imgs` lazily: one batch of images and of their views is held at a time."""
        return self._infer_batches(self.stacks(chunk) for chunk in _chunks(imgs, batch_size))

    def infer_views(self, views: Iterable[np.ndarray], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Model views ((S, S) uint8, or (K, S, S) stacks of test-time views, already prepared: see
        `stacks`) -> (probabilities (N, C), features (N, D))."""
        return self._infer_batches(_chunks(views, batch_size))

    def per_view_probs(self, imgs: Iterable[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Decoded (H, W) uint8 images -> (N, K, C): the network's probabilities for each of the card's K
        views (K = 1 without them), before `predict_proba` averages their logits and applies the
        temperature. For comparing view sets (bench/views.py); read lazily like `infer_images`."""
        per_view = [self._forward_views(to_model_input(np.stack(self.stacks(chunk))))[0]
                    for chunk in _chunks(imgs, batch_size)]
        return np.concatenate(per_view) if per_view else np.zeros((0, max(len(self.views), 1), len(self.classes)))

    def _infer_batches(self, batches: Iterable[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        probs, features = [], []
        for batch in batches:
            p, f = self.infer(to_model_input(np.stack(batch)))
            probs.append(p)
            features.append(f)
        if not probs:
            return np.zeros((0, len(self.classes))), np.zeros((0, 0))
        return np.concatenate(probs), np.concatenate(features)

    def predict_proba(self, imgs: Iterable[np.ndarray]) -> np.ndarray:
        """Decoded (H, W) uint8 images -> (N, C) probabilities in `classes` order."""
        return self.infer_images(imgs)[0]

    def gate_features(self, imgs: Iterable[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, D) features the OOD gate scores, for decoded (H, W) uint8 images: the box itself alone,
        so a model with test-time views does not run them (the gate reads view 0 either way)."""
        return self.infer_views((self.prepare(img) for img in imgs), batch_size)[1]

    def predict_file(self, src: bytes | str | Path, name: str = "") -> dict:
        """One file -> {"file", "label", "probabilities", "ood", "ood_score", "longest_side_px", "small_image"};
        raises InvalidImageError."""
        img = decode_image(src, name=name)
        probs, features = self.infer(self.model_input(img))
        scores = self.ood_scores(features)
        return self.result(name or str(src), probs[0], None if scores is None else float(scores[0]), max(img.shape))

    def result(self, file: str, probs: np.ndarray, ood_score: float | None = None,
               longest_side: int | None = None) -> dict:
        from cxr.resolution import small_image_note

        ood = None if ood_score is None else bool(ood_score > 1.0)
        return {
            "file": file,
            "label": self.classes[int(np.argmax(probs))],
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probs, strict=False)},
            # None only for models saved before the gate existed: unknown, not "in distribution".
            "ood": ood,
            "ood_score": None if ood_score is None else round(ood_score, 4),
            "longest_side_px": None if longest_side is None else int(longest_side),
            # The Predict page's small-image warning (cxr.resolution): a negative here rules out less.
            "small_image": (longest_side is not None and not ood
                            and small_image_note(self.card, int(longest_side)) is not None),
        }

    def predict_stream(self, files: Iterable[str | Path], batch_size: int = 32) -> Iterator[dict]:
        """Results for many files, in order, through a parallel tf.data pipeline.

        Files are pulled from the iterable as the pipeline needs them and results are yielded
        batch by batch, so memory stays flat however many files there are. Unreadable files give
        {"file", "error"} and never stop the others.
        """
        import tensorflow as tf

        size, policy, views = self.card.image_size, self.card.resize_policy, self.views
        shape = (len(views), size, size) if views else (size, size)

        def load(path_bytes):
            try:
                img = decode_image(path_bytes.decode())
                return prepare_decoded(img, size, policy, views), b"", np.int32(max(img.shape))
            except CxrError as exc:
                return np.zeros(shape, np.uint8), str(exc).encode(), np.int32(0)

        def load_tf(path):
            img, error, side = tf.numpy_function(load, [path], (tf.uint8, tf.string, tf.int32), stateful=False)
            img.set_shape(shape)
            error.set_shape(())
            side.set_shape(())
            return path, img, error, side

        ds = tf.data.Dataset.from_generator(lambda: (str(f) for f in files),
                                            output_signature=tf.TensorSpec((), tf.string))
        ds = ds.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
        for paths, imgs, errors, sides in ds:
            probs, features = self.infer(to_model_input(imgs.numpy()))
            scores = self.ood_scores(features)
            for i, (path, error) in enumerate(zip(paths.numpy(), errors.numpy(), strict=True)):
                if error:
                    yield {"file": path.decode(), "error": error.decode()}
                else:
                    yield self.result(path.decode(), probs[i], None if scores is None else float(scores[i]),
                                      int(sides[i]))

    def predict_imageset(self, images: ImageSet, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Stream a labelled set through tf.data -> (probs (N, C), labels (N,))."""
        probs, labels, _ = self.infer_imageset(images, batch_size)
        return probs, labels

    def infer_imageset(self, images: ImageSet, batch_size: int = 32,
                       views: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stream a labelled set through tf.data -> (probs (N, C), labels (N,), features (N, D)).
        views=False scores the box alone (for the gate's features, which read view 0 either way)."""
        ds = make_dataset(images, self.card.image_size, self.card.resize_policy, batch_size,
                          views=self.views if views else ())
        probs, labels, features = [], [], []
        for x, y in ds:
            p, f = self.infer(x)
            probs.append(p)
            features.append(f)
            labels.append(y.numpy())
        if not probs:
            return np.zeros((0, len(self.classes))), np.zeros((0,), np.int64), np.zeros((0, 0))
        return np.concatenate(probs), np.concatenate(labels), np.concatenate(features)

    def evaluate(self, data: str | Path, split: str | None) -> tuple[ImageSet, np.ndarray, np.ndarray, dict]:
        """Metrics on a labelled folder (`split` of `data`) -> (images, probs, labels, metrics)."""
        images = load_imageset(data, split, self.classes)
        probs, labels = self.predict_imageset(images)
        metrics = classification_metrics(probs, labels, self.classes, self.card.covid_threshold,
                                         images.groups or None)
        return images, probs, labels, metrics


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def iter_image_files(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given, and the PNG/JPEG/DICOM files under any folder, walked lazily in name order."""
    import os

    for item in inputs:
        item = Path(item)
        if not item.is_dir():
            yield item
            continue
        for root, dirs, names in os.walk(item):
            dirs.sort()
            for name in sorted(names):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                    yield Path(root) / name
