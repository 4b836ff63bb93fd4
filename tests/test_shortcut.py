"""Journal-figure degradations (cxr.shortcut) and their place in the training pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.data import load_imageset, make_dataset
from cxr.shortcut import KINDS, TRAINING_KINDS, SourceCues, degrade
from tests import factory


@pytest.fixture()
def xray() -> np.ndarray:
    return factory.phantom(300, 360)


@pytest.mark.parametrize("kind", KINDS)
def test_each_degradation_changes_the_image_and_stays_grey_uint8(xray, kind):
    out = degrade(xray, (kind,), np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.ndim == 2
    same_shape = out.shape == xray.shape
    assert not same_shape or np.abs(out.astype(int) - xray).mean() > 0.05


def test_geometry_kinds_change_the_frame_like_a_figure(xray):
    rng = np.random.default_rng(0)
    cropped = degrade(xray, ("crop",), rng)
    assert cropped.shape[0] < xray.shape[0] and cropped.shape[1] < xray.shape[1]
    framed = degrade(xray, ("border",), rng)
    assert framed.shape[0] >= xray.shape[0] and framed.shape[1] >= xray.shape[1] and framed.size > xray.size
    captioned = degrade(xray, ("caption",), rng)
    assert captioned.shape[0] > xray.shape[0] and (captioned[xray.shape[0]:] == 255).mean() > 0.5


def test_degradation_is_reproducible_from_the_seed(xray):
    a = degrade(xray, KINDS, np.random.default_rng(7))
    b = degrade(xray, KINDS, np.random.default_rng(7))
    c = degrade(xray, KINDS, np.random.default_rng(8))
    assert np.array_equal(a, b) and not (a.shape == c.shape and np.array_equal(a, c))


def test_unknown_kind_is_a_value_error(xray):
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(xray, ("sepia",), np.random.default_rng(0))


def test_source_cues_probability(xray):
    rng = np.random.default_rng(0)
    assert SourceCues(p=0.0)(xray, rng) is xray
    changed = [not np.array_equal(SourceCues(p=1.0)(xray, rng), xray) for _ in range(20)]
    assert all(changed)
    assert "caption" not in TRAINING_KINDS  # held out for the probe


def test_training_pipeline_applies_cues_only_when_training(mini_data):
    images = load_imageset(mini_data, "train")
    cues = SourceCues(p=1.0)
    clean = np.concatenate([x.numpy() for x, _ in make_dataset(images, 64, "crop", 8)])
    again = np.concatenate([x.numpy() for x, _ in make_dataset(images, 64, "crop", 8, source_cues=cues)])
    assert np.array_equal(clean, again)  # evaluation never degrades
    train = np.concatenate([x.numpy() for x, _ in make_dataset(images, 64, "crop", 8, training=True,
                                                               source_cues=cues)])
    assert train.shape == clean.shape and train.dtype == np.float32
    # Shuffled, so compare sorted per-image means: degraded images differ from every clean one.
    assert not np.allclose(np.sort(train.mean(axis=(1, 2, 3))), np.sort(clean.mean(axis=(1, 2, 3))))


def test_crop_others_crops_every_other_class_and_leaves_the_figure_class_alone():
    cues = SourceCues(p=0.0, crop_others=1.0)
    rng = np.random.default_rng(0)
    assert all(cues.draw(rng, name) == ("crop",) for name in ("NORMAL", "PNEUMONIA") for _ in range(20))
    assert all(cues.draw(rng, "COVID19") == () for _ in range(20))
    assert cues.draw(rng) == ()  # class unknown: nothing extra
    half = SourceCues(p=0.5, crop_others=0.5)
    drawn = [half.draw(np.random.default_rng(i), "NORMAL") for i in range(2000)]
    # P(crop) = P(p drew it: ~0.5 x 0.5) + the rest x 0.5 = 0.625
    assert abs(np.mean(["crop" in k for k in drawn]) - 0.625) < 0.04


def test_cues_draw_only_from_their_kinds():
    """The OOD gate's figure copies add the caption strip, which training cues never draw."""
    rng = np.random.default_rng(0)
    training = {k for _ in range(200) for k in SourceCues(p=1.0).draw(rng)}
    every = {k for _ in range(200) for k in SourceCues(p=1.0, kinds=KINDS).draw(rng)}
    assert training == set(TRAINING_KINDS) and every == set(KINDS)


def test_crop_others_zero_draws_exactly_what_cues_drew_before():
    """Runs pair with seeds trained before crop_others existed: with it off, no extra draw."""
    old, new = SourceCues(p=0.5), SourceCues(p=0.5, crop_others=0.0)
    for i in range(50):
        rng_a, rng_b = np.random.default_rng(i), np.random.default_rng(i)
        assert old.draw(rng_a) == new.draw(rng_b, "NORMAL") and rng_a.random() == rng_b.random()


class _RecordingCues:
    """Cues that record the class each training image was drawn for, and change nothing."""

    def __init__(self):
        self.seen = []

    def draw(self, rng, label=None):
        self.seen.append(label)
        return ()

    def apply(self, img, kinds, rng):
        return img


def test_training_pipeline_tells_the_cues_each_image_class(mini_data):
    images = load_imageset(mini_data, "train")
    cues = _RecordingCues()
    for _ in make_dataset(images, 64, "crop", 8, training=True, source_cues=cues):
        pass
    assert sorted(cues.seen) == sorted(images.class_names())


@pytest.mark.parametrize("field", ["source_cues", "crop_others"])
def test_cue_shares_outside_0_to_1_are_refused(field):
    from cxr.train import TrainConfig

    with pytest.raises(ValueError, match=field):
        TrainConfig(data="x", **{field: 1.5})


def test_shrink_and_restore_keeps_the_size_and_loses_detail_only_below_the_side():
    from PIL import Image

    from cxr.shortcut import shrink_and_restore

    rng = np.random.default_rng(3)
    noisy = np.clip(factory.phantom(300, 360).astype(int) + rng.integers(-40, 41, (300, 360)), 0, 255).astype(np.uint8)
    pil = Image.fromarray(noisy)
    assert np.array_equal(np.asarray(shrink_and_restore(pil, 360)), noisy)  # already that small
    detail = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    restored = [np.asarray(shrink_and_restore(pil, side)) for side in (240, 120)]
    assert all(r.shape == noisy.shape and r.dtype == np.uint8 for r in restored)
    assert detail(noisy) > detail(restored[0]) > detail(restored[1])  # the smaller the figure, the less detail
