"""Lung fields: a small U-Net segmenter and the lung-box crop it drives.

Why: in the public COVID-19 collections the figures are cropped tight to the lungs while hospital
originals show shoulders, neck and abdomen, so *how much of the frame the lungs fill* marks the
source. Cropping every X-ray to the box around its lung fields (plus a margin) before classifying
puts the lungs at the same scale in every input and drops most of the frame, where borders,
letters and markers live.

The "lung-square" policy letterboxes a box the frame clipped (even black bars) instead of stretching
it square: figures are cut close to the lungs, so their boxes get clipped (80 % of the test COVID-19
figures, 5 % of the NIH normals), and under "lungs" their lungs reach the model squeezed, a shape
that marks the source.

The "lung-fields" policy goes further and blacks out everything outside the grown lung fields.
Caveat: trained on normal lungs only, the segmenter tends to leave dense consolidation out of the
mask; growing the fields keeps the edge of it, and the mask's shape then carries some of the
signal (a lung that does not look aerated), which is about the lungs, not the source.

The segmenter is trained on `cxr-lungs` (normal OpenIST X-rays with masks; see
`cxr.lungs_train`) and shipped in `assets/lung-segmenter/`. It only needs to be good enough for a
bounding box: a missed opacity inside a lung does not move the box's edges much.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.config import REPO_ROOT
from cxr.errors import ModelError

SEG_SIZE = 128  # segmenter input side; a lung box needs no finer detail
SEGMENTER_FILE = "segmenter.keras"
SEGMENTER_CARD = "segmenter.json"
MARGIN = 0.08  # of the box's side, on each side: keeps the costophrenic angles and apices in view
# A mask smaller than this share of the frame, or a box narrower than this share of a side, is
# not a pair of lungs (a photo, a lateral view, a failed segmentation): fall back to the centre.
MIN_AREA = 0.04
MIN_SIDE = 0.25
# Lung-field masking ("lung-fields" policy): the kept lung regions grown by this share of the
# frame, so the periphery and costophrenic angles, where COVID-19 opacities sit, stay in view,
# with a soft edge so no sharp mask outline becomes a feature of its own.
FIELD_GROW = 0.03
FIELD_SOFTNESS = 0.015


@dataclass(frozen=True)
class LungBox:
    """The crop the classifier sees, in original pixel coordinates (right/bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int
    found: bool  # False: no plausible lungs, the box is the central square
    lung_area: float  # share of the frame the mask covers

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom


def default_segmenter_dir() -> Path:
    return Path(os.environ.get("CXR_LUNG_SEGMENTER", REPO_ROOT / "assets" / "lung-segmenter"))


def build_segmenter(width: int = 12, size: int = SEG_SIZE) -> object:
    """A four-level U-Net on (size, size, 1) floats in 0..255 -> lung probability map.

    Trained at SEG_SIZE; the lung-gated classifier runs a copy at half that (`cxr.layers.LungFieldMap`)."""
    import keras
    from keras import layers

    from cxr.layers import PerImageStandardization

    def block(x, filters, name):
        for i in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((size, size, 1), name="image")
    x = PerImageStandardization(name="standardize")(inputs)
    skips = []
    for level, mult in enumerate((1, 2, 4)):
        x = block(x, width * mult, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, width * 8, "bottom")
    for level, mult in reversed(list(enumerate((1, 2, 4)))):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, width * mult, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, outputs, name="lung_segmenter")


def to_segmenter_input(img: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (SEG_SIZE, SEG_SIZE) float32, stretched: the mask is stretched back."""
    small = Image.fromarray(np.asarray(img, np.uint8)).resize((SEG_SIZE, SEG_SIZE), Image.Resampling.BILINEAR,
                                                              reducing_gap=2.0)
    return np.asarray(small, np.float32)


class LungSegmenter:
    """Loaded segmenter; thread-safe (`tf.data` calls it from several threads)."""

    def __init__(self, model, info: dict | None = None):
        import tensorflow as tf

        self.model = model
        self.info = info or {}
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path | None = None) -> LungSegmenter:
        import keras

        import cxr.layers  # noqa: F401  registers PerImageStandardization

        folder = Path(folder or default_segmenter_dir())
        path = folder / SEGMENTER_FILE
        if not path.is_file():
            raise ModelError(f"No lung segmenter at {path}; train one with `python -m cxr segmenter`.")
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # a damaged file: say so, do not crash the caller
            raise ModelError(f"The lung segmenter {path} is unreadable: {exc}") from None
        info = {}
        card = folder / SEGMENTER_CARD
        if card.is_file():
            info = json.loads(card.read_text(encoding="utf-8"))
        info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(model, info)

    def probabilities(self, imgs: list[np.ndarray]) -> np.ndarray:
        """Decoded (H, W) uint8 images -> (N, SEG_SIZE, SEG_SIZE) lung probabilities."""
        if not imgs:
            return np.zeros((0, SEG_SIZE, SEG_SIZE), np.float32)
        x = np.stack([to_segmenter_input(img) for img in imgs])[..., None]
        with self._lock:  # one forward at a time: both cores already serve it
            return np.asarray(self._forward(x), np.float32)[..., 0]

    def masks(self, imgs: list[np.ndarray]) -> list[np.ndarray]:
        """Boolean lung masks at each image's own size."""
        return [full_size_mask(prob, img.shape) for img, prob in zip(imgs, self.probabilities(imgs), strict=True)]

    def boxes(self, imgs: list[np.ndarray], pad: bool = False) -> list[LungBox]:
        return [box for box, _ in self.views(imgs, fields=False, pad=pad)]

    def box(self, img: np.ndarray, pad: bool = False) -> LungBox:
        return self.boxes([img], pad=pad)[0]

    def views(self, imgs: list[np.ndarray], fields: bool = True,
              pad: bool = False) -> list[tuple[LungBox, np.ndarray | None]]:
        """(lung box, lung-field weights or None) per image, from one segmenter pass (see
        `lung_field`); fields=False skips building the fields; pad: see `lung_box`."""
        return [(lung_box(prob, img.shape, pad=pad), lung_field(prob) if fields else None)
                for img, prob in zip(imgs, self.probabilities(imgs), strict=True)]


def read_mask(path: Path) -> np.ndarray:
    """A cxr-lungs mask file (0 = background, 255 = lung) -> boolean (H, W) mask."""
    return np.asarray(Image.open(path).convert("L")) >= 128


def full_size_mask(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (SEG_SIZE, SEG_SIZE) probability map -> boolean mask of an (H, W) image."""
    h, w = shape
    up = Image.fromarray((prob * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(up) >= 128


@lru_cache(maxsize=4)
def _load_cached(folder: str) -> LungSegmenter:
    return LungSegmenter.load(Path(folder))


def default_segmenter() -> LungSegmenter:
    """The shipped segmenter, loaded once per process."""
    return _load_cached(str(default_segmenter_dir().resolve()))


EDGE = 0.15  # a region centred in the outer 15 % of the width is an arm or a shoulder, not a lung


def keep_largest(mask: np.ndarray, count: int = 2) -> np.ndarray:
    """The `count` largest connected regions of a boolean mask (two lungs; specks and arms dropped)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    index = np.arange(1, n + 1)
    sizes = np.asarray(ndimage.sum(mask, labels, index=index), np.float64)
    centres_x = np.array([c[1] for c in ndimage.center_of_mass(mask, labels, index)]) / mask.shape[1]
    lateral = (centres_x < EDGE) | (centres_x > 1 - EDGE)
    if not lateral.all():
        sizes[lateral] = 0  # the upper arms of a wide AP film segment like lungs
    keep = index[np.argsort(sizes)[::-1][:count]]
    keep = keep[sizes[keep - 1] > 0]
    return np.isin(labels, keep)


def central_square(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape
    side = min(h, w)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def lung_box(prob: np.ndarray, shape: tuple[int, int], pad: bool = False) -> LungBox:
    """Square-ish box around the lungs of a (SEG_SIZE, SEG_SIZE) probability map, in (H, W) pixels.

    pad=False clips the box to the frame (the resize then stretches it square); pad=True then
    letterboxes the clipped box: the short side grows evenly past the frame (black there) to a square.
    Letterboxing, not centring on the lungs: bars only as wide as needed, and even, like the black
    edges that training's shifts and zooms give every class.
    """
    h, w = shape
    mask = keep_largest(prob >= 0.5)
    area = float(mask.mean())
    rows, cols = np.nonzero(mask)
    if area < MIN_AREA or len(rows) == 0:
        return LungBox(*central_square(shape), found=False, lung_area=area)
    sy, sx = h / SEG_SIZE, w / SEG_SIZE
    top, bottom = rows.min() * sy, (rows.max() + 1) * sy
    left, right = cols.min() * sx, (cols.max() + 1) * sx
    if (right - left) < MIN_SIDE * w or (bottom - top) < MIN_SIDE * h:
        return LungBox(*central_square(shape), found=False, lung_area=area)
    # Square in pixels, so lungs keep their shape; clipped to the frame (then the resize stretches a little).
    side = max(right - left, bottom - top) * (1 + 2 * MARGIN)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    bw, bh = min(side, w), min(side, h)
    x0 = int(round(min(max(cx - bw / 2, 0), w - bw)))
    y0 = int(round(min(max(cy - bh / 2, 0), h - bh)))
    if pad:
        s = max(bw, bh)
        x0, y0 = int(round(x0 - (s - bw) / 2)), int(round(y0 - (s - bh) / 2))
        return LungBox(x0, y0, x0 + int(round(s)), y0 + int(round(s)), found=True, lung_area=area)
    # min(): rounding x0 up and the side up could put the box one pixel past the frame.
    return LungBox(x0, y0, min(x0 + int(round(bw)), w), min(y0 + int(round(bh)), h), found=True, lung_area=area)


def lung_mask(prob: np.ndarray) -> np.ndarray | None:
    """The lungs of a (SEG_SIZE, SEG_SIZE) probability map as a boolean mask (two largest regions);
    None when no plausible lungs were found."""
    mask = keep_largest(prob >= 0.5)
    return mask if mask.mean() >= MIN_AREA else None


def lung_field(prob: np.ndarray) -> np.ndarray | None:
    """(SEG_SIZE, SEG_SIZE) weights in 0..1 over the whole frame: 1 on the grown lung fields, 0 far
    outside them. None when no plausible lungs were found (then nothing is masked)."""
    from scipy import ndimage

    mask = lung_mask(prob)
    if mask is None:
        return None
    grown = ndimage.binary_dilation(mask, iterations=max(1, round(FIELD_GROW * SEG_SIZE)))
    soft = ndimage.gaussian_filter(grown.astype(np.float32), FIELD_SOFTNESS * SEG_SIZE)
    # Rescaled so the grown field itself keeps full weight; only its outside edge fades.
    return np.clip(soft * 2, 0, 1).astype(np.float32)


def field_in_box(field: np.ndarray | None, box: tuple[int, int, int, int], shape: tuple[int, int],
                 size: int) -> np.ndarray | None:
    """The part of a whole-frame lung field under `box` of an (H, W) image, as (size, size) weights."""
    if field is None:
        return None
    h, w = shape
    left, top, right, bottom = box
    scale_x, scale_y = field.shape[1] / w, field.shape[0] / h
    # Outside the frame there are no lungs: pad the field with zeros so any box maps exactly.
    pad_x = int(np.ceil(max(0, -left, right - w) * scale_x)) + 1
    pad_y = int(np.ceil(max(0, -top, bottom - h) * scale_y)) + 1
    field = np.pad(field, ((pad_y, pad_y), (pad_x, pad_x)))
    region = (left * scale_x + pad_x, top * scale_y + pad_y, right * scale_x + pad_x, bottom * scale_y + pad_y)
    out = Image.fromarray(field.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR, box=region)
    return np.clip(np.asarray(out, np.float32), 0, 1)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Overlap of two boolean masks: 1 = identical, 0 = disjoint."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)
