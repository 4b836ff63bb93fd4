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


def test_with_averaged_weights_statistics_are_gathered_for_the_averaged_weights(mini_data):
    """--ema with precise batch norm: the kept model is normalised for the weights it keeps."""
    import tensorflow as tf

    from cxr.train import compiled_model, training_callbacks

    # The statistics come from the dataset handed to the callbacks here, not from a set of images.
    config = TrainConfig(data=mini_data, image_size=64, batch_size=4, ema=True, precise_bn=1,
                         precise_bn_source="training")
    model = compiled_model(config, 3)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)  # ends with the averaged weights in the model
    for weight in model.trainable_weights:  # now the weights being trained differ from their average
        weight.assign(weight + rng.normal(0, 0.05, weight.shape).astype(np.float32))
    callbacks = keras.callbacks.CallbackList(
        training_callbacks(config, tf.data.Dataset.from_tensors((x, y)), None, "val_loss"), model=model)
    callbacks.on_test_begin()  # inside fit: just before each validation pass
    gathered = [bn.moving_mean.numpy().copy() for bn in batch_norm_layers(model)]
    recompute_statistics(model, [x])  # with the weights now in the model: the averaged ones
    for before, bn in zip(gathered, batch_norm_layers(model), strict=True):
        np.testing.assert_allclose(before, bn.moving_mean.numpy(), rtol=1e-4, atol=1e-5)


def test_clean_statistics_come_from_the_training_images_without_augmentation_or_cues(mini_data):
    """`precise_bn_source="clean"`: the same shuffled training images, as served (no jitter, no figure cues)."""
    from cxr.data import load_imageset, make_dataset, split_train_val
    from cxr.train import statistics_batches, training_datasets

    train_set, val_set = split_train_val(load_imageset(mini_data, "train"), 0.15, 0)
    config = TrainConfig(data=mini_data, image_size=64, batch_size=4, source_cues=1.0, crop_others=1.0,
                         precise_bn_source="training")
    augmented, _ = training_datasets(config, train_set, val_set)
    assert statistics_batches(config, train_set, augmented) is augmented  # as trained
    clean_config = TrainConfig(data=mini_data, image_size=64, batch_size=4, source_cues=1.0, crop_others=1.0)
    assert clean_config.precise_bn_source == "clean"  # the default since 2026-12-04
    clean = next(iter(statistics_batches(clean_config, train_set, augmented)))
    expected = next(iter(make_dataset(train_set, 64, config.resize_policy, 4, True, None, config.seed, None)))
    np.testing.assert_array_equal(clean[0].numpy(), expected[0].numpy())
    np.testing.assert_array_equal(clean[1].numpy(), expected[1].numpy())
    # The same images as the training pipeline's first batch, but not as degraded and jittered.
    first = next(iter(augmented))
    np.testing.assert_array_equal(np.sort(clean[1].numpy()), np.sort(first[1].numpy()))
    assert not np.allclose(clean[0].numpy(), first[0].numpy())
    with pytest.raises(ValueError, match="training images"):
        statistics_batches(clean_config, None, augmented)
    with pytest.raises(ValueError, match="precise_bn_source"):
        TrainConfig(data=mini_data, precise_bn_source="validation")


def test_training_records_the_statistics_source(mini_data, tmp_path):
    for source in ("clean", "training"):
        config = TrainConfig(data=mini_data, epochs=1, image_size=64, batch_size=8, precise_bn=2,
                             precise_bn_source=source, name=f"pbn-{source}")
        saved = train(config, ModelStore(tmp_path))
        assert saved.card.training["config"]["precise_bn_source"] == source
