"""Training-time augmentation on the tf.data side (never used at evaluation or prediction).

All geometry is fused into ONE projective warp per image (rotation, zoom, shift), and exposure
jitter is a few element-wise ops: on a 2-core CPU, three separate Keras Random* layers cost as
much time as the network itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 7.0  # patient positioning varies by a few degrees
    zoom: tuple[float, float] = (0.9, 1.15)  # >1 zooms in; mimics tighter or looser collimation
    max_shift: float = 0.06  # fraction of the side
    max_gamma: float = 0.35  # log-gamma range: detector and processing curves differ
    max_contrast: float = 0.25  # +-25 % contrast around the image mean
    max_brightness: float = 0.1  # +-10 % of full scale
    # No horizontal flip: anatomy (heart on the left) and burned-in side markers are not
    # mirror-symmetric.


def projective_warp(x, angle, scale_x, scale_y, shift_x, shift_y):
    """Rotate (rad), zoom (>1 zooms in) and shift (px) each image of a (B, S, S, C) batch about its centre.

    Every argument is a (B,) tensor; pixels from outside the image are 0.
    """
    import tensorflow as tf

    size = tf.cast(tf.shape(x)[1], tf.float32)
    # The warp maps each OUTPUT pixel to the INPUT pixel it samples.
    cos, sin = tf.cos(angle), tf.sin(angle)
    centre = (size - 1) / 2
    a0, a1 = cos / scale_x, -sin / scale_x
    b0, b1 = sin / scale_y, cos / scale_y
    a2 = centre - a0 * (centre + shift_x) - a1 * (centre + shift_y)
    b2 = centre - b0 * (centre + shift_x) - b1 * (centre + shift_y)
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT",
    )


def augment_batch(x, config: AugmentConfig = AugmentConfig()):
    """(B, S, S, C) float32 in 0..255 -> the same shape, randomly warped and re-exposed."""
    import tensorflow as tf

    batch = tf.shape(x)[0]
    size = tf.cast(tf.shape(x)[1], tf.float32)
    uniform = lambda lo, hi: tf.random.uniform((batch,), lo, hi)  # noqa: E731
    angle = uniform(-1.0, 1.0) * (config.max_rotation_deg * math.pi / 180)
    scale = uniform(*config.zoom)
    shift_x = uniform(-config.max_shift, config.max_shift) * size
    shift_y = uniform(-config.max_shift, config.max_shift) * size
    x = projective_warp(x, angle, scale, scale, shift_x, shift_y)
    per_image = lambda v: tf.reshape(v, (-1, 1, 1, 1))  # noqa: E731
    gamma = per_image(tf.exp(uniform(-config.max_gamma, config.max_gamma)))
    x = 255.0 * tf.pow(tf.clip_by_value(x / 255.0, 0.0, 1.0), gamma)
    mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
    contrast = per_image(uniform(1 - config.max_contrast, 1 + config.max_contrast))
    brightness = per_image(uniform(-config.max_brightness, config.max_brightness) * 255.0)
    return tf.clip_by_value((x - mean) * contrast + mean + brightness, 0.0, 255.0)
