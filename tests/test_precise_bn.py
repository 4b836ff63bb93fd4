"""Precise batch-norm statistics (cxr.precise_bn): exact averages, and used inside training."""

import keras
import numpy as np
import pytest

from cxr.model import build_model
from cxr.precise_bn import batch_norm_layers, recompute_statistics
from cxr.store import ModelStore
from cxr.train import TrainConfig, train


def test_statistics_are_the_average_of_the_batches_statistics():
    inputs = keras.Input((4, 4, 2))
    outputs = keras.layers.BatchNormalization(name="bn")(keras.layers.Identity()(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 1 + loc, (8, 4, 4, 2)).astype(np.float32) for loc in (0.0, 2.0, 4.0)]
    assert recompute_statistics(model, batches) == 3
    bn = model.get_layer("bn")
    expected_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    expected_var = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), expected_var, rtol=1e-4)


def test_deeper_layers_see_inputs_normalised_by_their_batch():
    """Downstream statistics are gathered with upstream batch norm in training mode."""
    model = build_model("cxrnet", 3, 64)
    layers = batch_norm_layers(model)
    assert len(layers) == 6
    batch = np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    recompute_statistics(model, [batch])
    # The first layer's input does not depend on any batch norm: its statistics are the batch's.
    stem = keras.Model(model.inputs[0], layers[0].input)(batch).numpy()
    np.testing.assert_allclose(layers[0].moving_mean.numpy(), stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    # The last one's moving variance is no longer the initial 1.0 anywhere it had signal.
    assert not np.allclose(layers[-1].moving_variance.numpy(), 1.0)


def test_training_with_precise_statistics_records_it(mini_data, tmp_path):
    config = TrainConfig(data=mini_data, epochs=2, image_size=64, batch_size=8, precise_bn=2, name="pbn")
    saved = train(config, ModelStore(tmp_path))
    assert saved.card.training["config"]["precise_bn"] == 2
    with pytest.raises(ValueError, match="precise_bn"):
        TrainConfig(data=mini_data, precise_bn=-1)
