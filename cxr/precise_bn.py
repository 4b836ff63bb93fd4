"""Precise batch-norm statistics (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", sec. 3).

Why: Keras keeps an exponential moving average of batch statistics, so a model evaluated at an
epoch's end is normalised mostly by its last few batches' statistics, gathered while the weights
were still moving. With ~30 steps an epoch, figure cues on half the images and class-weighted
batches, those few batches are a poor sample: validation accuracy of the same run jumped between
0.20 and 0.69 from one epoch to the next while training accuracy moved by 0.02, and early
stopping picked epochs by that noise. Here, before every validation pass, each batch-norm layer's
statistics are recomputed as the average over several training batches with the current weights.
"""

from __future__ import annotations

import numpy as np


def batch_norm_layers(model) -> list:
    """Every BatchNormalization layer of a model, nested models included."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found += batch_norm_layers(layer)
    return found


def recompute_statistics(model, batches) -> int:
    """Set every batch-norm layer's moving mean/variance to the average over `batches` of x.

    Each layer sees its input as in training (upstream layers normalise with their batch's own
    statistics), so the statistics match the weights as they are now. Returns the batch count.
    """
    import keras

    layers = batch_norm_layers(model)
    if not layers:
        return 0
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [layer.input for layer in layers])
    sums = [[0.0, 0.0] for _ in layers]
    count = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        # Batch statistics everywhere upstream (this also nudges the moving averages; overwritten below).
        outputs = probe(x, training=True)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        for total, layer, out in zip(sums, layers, outputs, strict=True):
            axes = tuple(i for i in range(len(out.shape)) if i != layer.axis % len(out.shape))
            total[0] += np.asarray(keras.ops.mean(out, axis=axes), np.float64)
            total[1] += np.asarray(keras.ops.var(out, axis=axes), np.float64)
        count += 1
    if count:
        for (mean, var), layer in zip(sums, layers, strict=True):
            layer.moving_mean.assign((mean / count).astype(np.float32))
            layer.moving_variance.assign((var / count).astype(np.float32))
    return count


def callback(train_ds, batches: int):
    """A Keras callback that recomputes the statistics from `batches` training batches before each
    validation pass inside `fit` (Keras runs the callbacks' `on_test_begin` there), so validation,
    early stopping and the restored best weights all use them."""
    import keras

    class PreciseBatchNorm(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            recompute_statistics(self.model, train_ds.take(batches))

    return PreciseBatchNorm()
