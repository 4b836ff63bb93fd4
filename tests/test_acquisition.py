"""Acquisition changes (another hospital's exposure, contrast, positioning) and the robustness figures."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.acquisition import CHANGES, change, robustness
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
