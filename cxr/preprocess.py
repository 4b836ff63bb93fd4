"""One preprocessing path for training and serving: grayscale uint8 -> square model input.

Intensity normalisation lives *inside* the model (its first layers), so a saved model carries its
own normalisation; here we only fix the geometry, which must happen before batching.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# How a non-square X-ray becomes square. "crop" (the default for new models) takes the central
# square, so the aspect ratio of the source, which differs by hospital, cannot leak into the
# input; "letterbox" keeps everything but pads with black bars; "stretch" is what the reference
# design did and distorts non-square images.
RESIZE_POLICIES = ("crop", "letterbox", "stretch")


def resize_square(img: np.ndarray, size: int, policy: str = "crop") -> np.ndarray:
    """Resize a (H, W) uint8 image to (size, size) uint8 under `policy`."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose one of {RESIZE_POLICIES}")
    pil = Image.fromarray(img)
    width, height = pil.size
    if policy == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        pil = pil.crop((left, top, left + side, top + side))
    elif policy == "letterbox":
        side = max(width, height)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(pil, ((side - width) // 2, (side - height) // 2))
        pil = canvas
    # reducing_gap makes large downscales fast (JPEG-style reduce first) at no visible cost.
    pil = pil.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(pil, dtype=np.uint8)


def to_model_input(imgs: np.ndarray) -> np.ndarray:
    """(N, S, S) or (S, S) uint8 -> (N, S, S, 3) float32 in 0..255, the models' input."""
    x = np.asarray(imgs, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    return np.repeat(x[..., None], 3, axis=-1)
