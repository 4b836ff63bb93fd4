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
