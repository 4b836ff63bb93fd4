"""Train and evaluate the lung segmenter on a `cxr-lungs` folder (train/ and test/ images + masks).

The masks are all normal adults from one teaching set, while the classifier meets hospital
originals (wide field of view) and journal figures (tight crops, letters, arrows). Augmentation
therefore zooms out and in, shifts, re-exposes, and puts figure furniture on the images, so the
segmenter has seen those looks without ever seeing a COVID-19 image.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.augment import projective_warp
from cxr.decode import decode_image
from cxr.errors import DatasetError
from cxr.lungs import (
    SEG_SIZE,
    SEGMENTER_CARD,
    SEGMENTER_FILE,
    LungSegmenter,
    build_segmenter,
    dice,
    full_size_mask,
    lung_box,
    read_mask,
)
from cxr.shortcut import degrade

# Geometry-free figure cues only: the mask must stay aligned with the image.
FIGURE_KINDS = ("downscale", "jpeg", "letters", "arrows")


def load_pairs(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Decoded images and boolean masks (same size) of `root/split/`."""
    folder = Path(root) / split
    masks_dir = folder / "masks"
    if not masks_dir.is_dir():
        raise DatasetError(f"{folder} has no masks/ folder; expected the cxr-lungs layout.")
    imgs, masks, names = [], [], []
    for mask_path in sorted(masks_dir.glob("*.png")):
        image_path = folder / "images" / mask_path.with_suffix(".jpg").name
        if not image_path.is_file():
            continue
        img = decode_image(image_path)
        mask = read_mask(mask_path)
        if mask.shape != img.shape:
            continue
        imgs.append(img)
        masks.append(mask)
        names.append(image_path.name)
    if not imgs:
        raise DatasetError(f"No image/mask pairs in {folder}.")
    return imgs, masks, names


def _small(arr: np.ndarray, resample=Image.Resampling.BILINEAR) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((SEG_SIZE, SEG_SIZE), resample, reducing_gap=2.0), np.float32)


def _warp(x, max_rotation_deg=10.0, zoom=(0.55, 1.25), max_shift=0.12):
    """One random projective warp per image, applied to image and mask channels alike."""
    import tensorflow as tf

    batch = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    uniform = lambda lo, hi: tf.random.uniform((batch,), lo, hi)  # noqa: E731
    angle = uniform(-1.0, 1.0) * (max_rotation_deg * math.pi / 180)
    # Zoom and aspect independently: originals show the lungs small, figures crop them non-square.
    sx, sy = uniform(*zoom), uniform(*zoom) * uniform(0.9, 1.1)
    tx, ty = uniform(-max_shift, max_shift) * size, uniform(-max_shift, max_shift) * size
    return projective_warp(x, angle, sx, sy, tx, ty)


def _augment(batch):
    import tensorflow as tf

    warped = tf.ensure_shape(_warp(batch), (None, SEG_SIZE, SEG_SIZE, 2))  # the raw op forgets the size
    img, mask = warped[..., :1], tf.cast(warped[..., 1:] >= 0.5, tf.float32)
    n = tf.shape(img)[0]
    gamma = tf.reshape(tf.exp(tf.random.uniform((n,), -0.4, 0.4)), (-1, 1, 1, 1))
    img = 255.0 * tf.pow(tf.clip_by_value(img / 255.0, 0.0, 1.0), gamma)
    return img, mask


def _figure_copies(imgs: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Half the images get random figure furniture; fixed per run (cheap, and enough variety)."""
    rng = np.random.default_rng(seed)
    out = []
    for img in imgs:
        if rng.random() < 0.5:
            kinds = tuple(k for k in FIGURE_KINDS if rng.random() < 0.5) or ("letters",)
            img = degrade(img, kinds, rng)
        out.append(img)
    return out


def evaluate_segmenter(segmenter: LungSegmenter, imgs: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """Dice at full resolution, and how often the lung box holds the whole true mask."""
    dices, covered = [], []
    for img, mask, prob in zip(imgs, masks, segmenter.probabilities(imgs), strict=True):
        dices.append(dice(full_size_mask(prob, img.shape), mask))
        box = lung_box(prob, img.shape)
        inside = mask[box.top:box.bottom, box.left:box.right].sum()
        covered.append(inside / max(1, mask.sum()))
    return {"n": len(imgs), "dice_mean": round(float(np.mean(dices)), 4),
            "dice_min": round(float(np.min(dices)), 4),
            "lung_inside_box_mean": round(float(np.mean(covered)), 4),
            "lung_inside_box_min": round(float(np.min(covered)), 4)}


def train_segmenter(root: Path, out_dir: Path, epochs: int = 60, seed: int = 0, batch_size: int = 16,
                    on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Fit the U-Net on root/train, report Dice on root/test, save it atomically to out_dir."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    started = time.time()
    train_imgs, train_masks, _ = load_pairs(root, "train")
    test_imgs, test_masks, _ = load_pairs(root, "test")
    masks_small = np.stack([_small(m.astype(np.uint8) * 255, Image.Resampling.NEAREST) / 255 for m in train_masks])

    def epoch_data(epoch: int):
        imgs = np.stack([_small(img) for img in _figure_copies(train_imgs, seed * 1000 + epoch)])
        return np.stack([imgs, masks_small], axis=-1).astype(np.float32)

    model = build_segmenter()
    bce = keras.losses.BinaryCrossentropy()

    def loss(y_true, y_pred):
        overlap = tf.reduce_sum(y_true * y_pred, axis=(1, 2, 3))
        total = tf.reduce_sum(y_true + y_pred, axis=(1, 2, 3))
        return bce(y_true, y_pred) + tf.reduce_mean(1 - (2 * overlap + 1) / (total + 1))

    steps = epochs * math.ceil(len(train_imgs) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    history = []
    for epoch in range(epochs):
        ds = (tf.data.Dataset.from_tensor_slices(epoch_data(epoch)).shuffle(len(train_imgs), seed=seed + epoch)
              .batch(batch_size).map(_augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))
        logs = model.fit(ds, epochs=1, verbose=0, shuffle=False).history  # ds is shuffled
        history.append(round(float(logs["loss"][0]), 4))
        if on_epoch:
            on_epoch(epoch, {"loss": history[-1]})
    segmenter = LungSegmenter(model)
    info = {
        "trained_on": str(Path(root).name), "n_train": len(train_imgs), "epochs": epochs, "seed": seed,
        "input": f"{SEG_SIZE}x{SEG_SIZE} grayscale, stretched", "loss_history": history,
        "test": evaluate_segmenter(segmenter, test_imgs, test_masks),
        "test_with_figure_cues": evaluate_segmenter(segmenter, _figure_copies(test_imgs, 10_000 + seed), test_masks),
        "seconds": round(time.time() - started, 1),
    }
    _save(model, info, Path(out_dir))
    return info


def _save(model, info: dict, out_dir: Path) -> None:
    """Write into a sibling temp folder, then swap it in: a reader never sees half a segmenter."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.staging")
    staging.mkdir(exist_ok=True)
    # A fresh, uncompiled copy: the optimizer state would triple the file and is never needed.
    clean = build_segmenter()
    clean.set_weights(model.get_weights())
    clean.save(staging / SEGMENTER_FILE)
    (staging / SEGMENTER_CARD).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old.exists():
        import shutil

        shutil.rmtree(old, ignore_errors=True)
