"""Model selection against source cues (cxr.selection, cxr.data.figure_like)."""

import numpy as np
import pytest

from cxr import selection
from cxr.calibration import nll
from cxr.data import figure_like, load_imageset, make_dataset
from cxr.shortcut import SourceCues


@pytest.mark.parametrize("policy", ["crop", "lungs"])
def test_figure_like_copies_are_the_same_every_call_and_differ_from_the_clean_views(mini_data, policy):
    images = load_imageset(mini_data, "test")
    x, y = figure_like(images, 64, policy, SourceCues(p=1.0), seed=0)
    again, _ = figure_like(images, 64, policy, SourceCues(p=1.0), seed=0)
    other, _ = figure_like(images, 64, policy, SourceCues(p=1.0), seed=1)
    clean = np.concatenate([b.numpy()[..., 0] for b, _ in make_dataset(images, 64, policy, 8)])
    assert x.shape == clean.shape and x.dtype == np.uint8 and list(y) == images.labels
    assert np.array_equal(x, again)  # fixed copies: epochs are compared on the same images
    assert not np.array_equal(x, other)
    # Every copy got at least one cue; only "downscale" alone is a no-op on the mini set, whose
    # 128 px images are already smaller than a figure (2 of its 12 test images draw just that).
    differs = [not np.array_equal(a, b.astype(np.uint8)) for a, b in zip(x, clean, strict=True)]
    assert np.mean(differs) >= 0.75


def test_figure_like_skips_unreadable_files(mini_data, tmp_path):
    images = load_imageset(mini_data, "test")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    images = images.subset(range(3))
    images.paths.append(bad)
    images.labels.append(0)
    x, y = figure_like(images, 48, "crop", SourceCues(p=1.0))
    assert len(x) == len(y) == 3


class _Fixed:
    """A stand-in model that returns the same probabilities for any batch, in batches."""

    def __init__(self, probs):
        self.probs, self.seen = np.asarray(probs, np.float32), 0

    def __call__(self, x, training=False):
        assert not training and x.shape[-1] == 3 and x.dtype == np.float32
        out = self.probs[self.seen:self.seen + len(x)]
        self.seen += len(x)
        return out


def test_callback_logs_the_figure_loss_and_selects_on_the_mean():
    x = np.zeros((5, 8, 8), np.uint8)
    y = np.array([0, 1, 1, 2, 0])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    callback = selection.callback(x, y, batch_size=2)
    callback.set_model(_Fixed(probs))
    logs = {"val_loss": 0.5}
    callback.on_epoch_end(0, logs)
    assert logs[selection.FIGURE_LOSS] == pytest.approx(nll(probs, y), rel=1e-5)
    assert logs[selection.FIGURE_ACCURACY] == pytest.approx(3 / 5)
    assert logs[selection.MONITOR] == pytest.approx((0.5 + nll(probs, y)) / 2, rel=1e-5)


def test_binary_heads_become_two_columns():
    probs = selection.probabilities(_Fixed([[0.9], [0.2]]), np.zeros((2, 8, 8), np.uint8))
    assert np.allclose(probs, [[0.1, 0.9], [0.8, 0.2]], atol=1e-6)


def test_normals_below_threshold_counts_only_normals():
    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    probs = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.1, 0.9, 0.0], [0.8, 0.0, 0.2]])
    labels = np.array([0, 1, 1, 2])
    assert selection.normals_below(probs, labels, classes, 0.3) == 0.5
    assert selection.normals_below(probs, labels, ["A", "B", "C"], 0.3) is None


def test_the_kept_epoch_is_said_for_a_model_and_for_each_member_of_an_ensemble():
    from cxr.card import ModelCard
    from cxr.selection import describe

    metrics = {"validation": {"accuracy": 0.75}, "validation_figure_like": {"n": 159, "accuracy": 0.72}}
    single = ModelCard("a", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs", training={"best_epoch": 12},
                       metrics=metrics)
    assert describe(single).startswith("Kept epoch 12, chosen on clean and figure-like validation loss")
    # An ensemble's card keeps no epoch of its own, only its members' (it said "Kept epoch None").
    ensemble = ModelCard("e", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs", metrics=metrics,
                         training={"ensemble_of": [{"name": "m0", "best_epoch": 8}, {"name": "m1", "best_epoch": 3}]})
    assert describe(ensemble).startswith("Its 2 members kept epochs 8, 3, each, chosen on")
    assert "None" not in describe(ensemble)
