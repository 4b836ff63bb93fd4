"""Custom Keras layers, registered so that `safe_mode=True` loading can rebuild them."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cxr")
class PerImageStandardization(keras.layers.Layer):
    """Scale each image to zero mean, unit variance over its own pixels.

    Removes exposure and contrast differences between hospitals and encoders (and makes an 8-bit
    and a 16-bit encoding of the same X-ray identical) before the network sees the pixels.
    """

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = ops.std(x, axis=(1, 2, 3), keepdims=True)
        return (x - mean) / ops.maximum(std, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="cxr")
class PerImageEqualization(keras.layers.Layer):
    """Histogram-equalise each image over its own pixels, then centre and scale it.

    Every pixel becomes its rank among the image's pixels (interpolated between `levels`
    quantiles), so any monotone change of the grey levels (another detector's or workstation's
    exposure curve, gamma, windowing, contrast) gives the same input. Per-image standardisation
    removes only linear changes: with it, a darker (gamma 1.6) copy of a validation COVID-19
    X-ray lost most of its P(COVID19), the lung box unchanged.
    Gradients flow through the interpolation (the quantiles are held fixed), so gradient-based
    saliency still works. Black stays black: ties map to their lowest rank.
    """

    def __init__(self, levels: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.levels = levels

    def call(self, x):
        import tensorflow as tf

        x = tf.convert_to_tensor(x, tf.float32)
        shape = tf.shape(x)
        flat = tf.reshape(x[..., 0], (shape[0], -1))  # the channels are copies of one grey image
        n = tf.shape(flat)[1]
        positions = tf.cast(tf.round(tf.linspace(0.0, tf.cast(n - 1, tf.float32), self.levels)), tf.int32)
        quantiles = tf.stop_gradient(tf.gather(tf.sort(flat, axis=1), positions, axis=1))  # (B, levels)
        upper = tf.clip_by_value(tf.searchsorted(quantiles, flat, side="left"), 1, self.levels - 1)
        q_lo = tf.gather(quantiles, upper - 1, batch_dims=1)
        q_hi = tf.gather(quantiles, upper, batch_dims=1)
        frac = tf.clip_by_value((flat - q_lo) / tf.maximum(q_hi - q_lo, 1e-6), 0.0, 1.0)
        rank = (tf.cast(upper - 1, tf.float32) + frac) / (self.levels - 1)  # 0..1, uniform
        out = (rank - 0.5) / 0.2887  # a uniform variable's mean and standard deviation
        return tf.repeat(tf.reshape(out, shape[:3])[..., None], shape[3], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


@keras.saving.register_keras_serializable(package="cxr")
class LungFieldMap(keras.layers.Layer):
    """(B, S, S, C) model input -> (B, cells, cells, 1): how much of each cell of the final feature
    map the (grown) lung fields cover, from a frozen copy of the lung segmenter (`cxr.lungs`).

    Used by the lung-gated cxrnet (`cxr.model`): its decision is pooled over lung positions only,
    so heat on the box's corners and edges, where letters and markers sit, cannot carry it. The
    segmenter sees the lung box the classifier sees; its weights travel inside the model file.
    It runs at 64 px, half its training size: on 40 lung boxes with masks the Dice is 0.964 against
    0.974 at 128 px, at a quarter of the cost (at 128 px it doubled a training step on two cores).
    """

    def __init__(self, cells: int, seg_size: int | None = None, grow: int | None = None, width: int = 12,
                 **kwargs):
        super().__init__(**kwargs)
        from cxr.lungs import FIELD_GROW, SEG_SIZE, build_segmenter

        seg_size = seg_size or SEG_SIZE // 2
        # A max-pool window that grows the fields by FIELD_GROW of the side each way, as the
        # lung-fields policy does (5 px at 64 px).
        grow = grow or 2 * max(1, round(FIELD_GROW * seg_size)) + 1
        self.cells, self.seg_size, self.grow, self.width = cells, seg_size, grow, width
        self.segmenter = build_segmenter(width, seg_size)
        self.segmenter.trainable = False
        self.trainable = False

    def call(self, x):
        grey = x[..., :1]
        small = ops.image.resize(grey, (self.seg_size, self.seg_size), interpolation="bilinear", antialias=True)
        prob = self.segmenter(small, training=False)
        # Grown, so the periphery and a dense opacity the normal-lung segmenter leaves out stay in.
        grown = ops.max_pool(prob, self.grow, strides=1, padding="same")
        # Share of each feature cell that is lung: resize to a multiple of the cells, then average.
        per_cell = 16
        fine = ops.image.resize(grown, (self.cells * per_cell, self.cells * per_cell), interpolation="bilinear")
        return ops.average_pool(fine, per_cell, strides=per_cell, padding="valid")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.cells, self.cells, 1)

    def get_config(self):
        return {**super().get_config(), "cells": self.cells, "seg_size": self.seg_size, "grow": self.grow,
                "width": self.width}


@keras.saving.register_keras_serializable(package="cxr")
class LungGate(keras.layers.Layer):
    """features (B, h, w, C) x field (B, h, w, 1): the feature map with non-lung cells weighed down.

    A layer of its own (not a Multiply) so Grad-CAM can read the gated map by name.
    """

    def call(self, inputs):
        features, field = inputs
        return features * field

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable(package="cxr")
class FieldAverage(keras.layers.Layer):
    """Average of gated features over the lung field: sum(features x field) / sum(field) -> (B, C)."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        gated, field = inputs
        return ops.sum(gated, axis=(1, 2)) / (ops.sum(field, axis=(1, 2)) + self.epsilon)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], input_shapes[0][-1])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
