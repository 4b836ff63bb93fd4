"""Forward FLOPs of a Keras model, counted from its layers' shapes (multiply-add = 2 FLOPs).

Only convolutions and dense layers are counted, as is usual: batch norm, activations and pooling
add a few operations per activation, memory traffic rather than arithmetic on a CPU.
"""

from __future__ import annotations

import numpy as np


def layer_flops(layer) -> int:
    """Forward FLOPs of one layer for one image."""
    import keras

    if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
        out = layer.output.shape  # (None, H, W, C_out)
        kh, kw = layer.kernel_size
        in_channels = layer.input.shape[-1]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            per_output = kh * kw
        else:
            per_output = kh * kw * in_channels // layer.groups
        return int(2 * np.prod(out[1:]) * per_output)
    if isinstance(layer, keras.layers.Dense):
        return int(2 * np.prod(layer.input.shape[1:]) * layer.units)
    return 0


def model_flops(model) -> dict[str, int]:
    """{layer name: forward FLOPs per image} for the layers that do arithmetic."""
    return {layer.name: f for layer in model.layers if (f := layer_flops(layer))}
