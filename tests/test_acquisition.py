"""Acquisition changes (another hospital's exposure, contrast, positioning) and the robustness figures."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.acquisition import CHANGES, change, describe, on_validation, robustness
from cxr.card import ModelCard
from cxr.data import load_imageset
from cxr.predict import Predictor
from cxr.selection import model_score
from tests import factory


def test_changes_keep_the_frame_and_change_what_they_say():
    img = factory.phantom(200, 160)
    out = {name: change(img, name) for name in CHANGES}
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in out.values())
    assert out["darker"].mean() < img.mean() < out["brighter"].mean()
    assert out["low_contrast"].std() < 0.7 * img.std()
    grey = np.full((120, 100), 128, np.uint8)
    assert change(grey, "rotated")[0, 0] == 0 and change(grey, "rotated")[-1, -1] == 0  # a rotated scan's corners
    assert not np.array_equal(change(img, "rotated", 0), change(img, "rotated", 1))  # both directions
    with pytest.raises(ValueError, match="unknown change"):
        change(img, "sharper")


def test_robustness_counts_crossings_in_the_right_direction():
    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    labels = np.array([0, 0, 1, 1, 2])
    before = np.array([[.8, .1, .1], [.6, .3, .1], [.1, .8, .1], [.2, .7, .1], [.1, .1, .8]])
    after = np.array([[.3, .6, .1], [.7, .2, .1], [.6, .3, .1], [.2, .7, .1], [.1, .1, .8]])
    r = robustness(before, {"darker": after}, labels, classes, covid_threshold=0.5)["darker"]
    assert r["COVID19"]["crossed_threshold"] == 0.5  # one of two fell below
    assert r["NORMAL"]["crossed_threshold"] == 0.5  # one of two rose above
    assert r["PNEUMONIA"]["crossed_threshold"] == 0.0
    assert r["COVID19"]["mean_change_covid"] == pytest.approx(-0.2)
    assert r["COVID19"]["accuracy_before"] == 1.0 and r["COVID19"]["accuracy_after"] == 0.5
    assert r["NORMAL"]["mean_change_own_class"] == pytest.approx(-0.25)


def test_on_validation_scores_every_change_and_follows_the_model(tiny_model, mini_data):
    predictor = Predictor.from_path(tiny_model)
    images = load_imageset(mini_data, "test", predictor.classes)
    out = on_validation(predictor, images)
    assert set(out["changes"]) == set(CHANGES)
    darker = out["changes"]["darker"]
    assert darker["n"] == len(images) and np.isfinite(darker["log_loss"]) and darker["log_loss"] >= 0
    assert 0 <= darker["accuracy"] <= 1
    assert 0 <= darker["covid_at_or_above_threshold"] <= 1 and 0 <= darker["normal_below_threshold"] <= 1
    assert out["mean_log_loss"] == pytest.approx(np.mean([c["log_loss"] for c in out["changes"].values()]), abs=1e-3)
    # A threshold of 0 finds every COVID-19 image and leaves no normal below it, whatever the change.
    predictor.card.covid_threshold = 0.0
    zero = on_validation(predictor, images)["changes"]["rotated"]
    assert zero["covid_at_or_above_threshold"] == 1.0 and zero["normal_below_threshold"] == 0.0


def test_model_score_needs_all_three_losses():
    assert model_score(0.6, 0.7, 0.8)["score"] == pytest.approx(0.7)
    assert model_score(0.6, None, 0.8)["score"] is None


def test_describe_warns_when_another_hospitals_xrays_lose_covid_cases():
    card = ModelCard(name="m", arch="cxrnet", classes=["COVID19", "NORMAL", "PNEUMONIA"], image_size=64)
    assert describe(card) is None  # a card from before this was measured
    changes = {name: {"n": 10, "log_loss": 0.6, "accuracy": 0.7, "covid_at_or_above_threshold": 1.0,
                      "normal_below_threshold": 0.8} for name in CHANGES}
    card.metrics = {"calibration": {"nll_after": 0.5},
                    "validation_acquisition": {"changes": changes, "mean_log_loss": 0.6}}
    assert "0.600" in describe(card) and "expect more misses" not in describe(card)
    changes["darker"]["covid_at_or_above_threshold"] = 0.57
    assert "57% when darker" in describe(card) and "expect more misses" in describe(card)
