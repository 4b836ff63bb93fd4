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
