"""Temperature scaling and the COVID-19 operating threshold (cxr.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.calibration import (
    covid_threshold,
    describe_threshold,
    fit_temperature,
    group_weights,
    nll,
    threshold_evidence,
    threshold_for_sensitivity,
    threshold_for_weighted_sensitivity,
)
from cxr.metrics import expected_calibration_error
from cxr.predict import apply_temperature


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_undoes_known_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, (4000, 3))
    true = _softmax(logits)
    labels = np.array([rng.choice(3, p=p) for p in true])
    overconfident = _softmax(logits * 3.0)  # as if the logits were three times too large
    t = fit_temperature(overconfident, labels)
    assert 2.6 < t < 3.4
    fixed = apply_temperature(overconfident, t)
    assert nll(fixed, labels) < nll(overconfident, labels)
    assert expected_calibration_error(fixed, labels) < expected_calibration_error(overconfident, labels) / 2
    # Scaling never changes the predicted class.
    assert np.array_equal(fixed.argmax(1), overconfident.argmax(1))


def test_temperature_stays_one_for_calibrated_or_empty_input():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, (4000, 3))
    probs = _softmax(logits)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    assert 0.9 < fit_temperature(probs, labels) < 1.1
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0


def test_threshold_for_sensitivity_is_the_highest_that_keeps_it():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.2, 0.1])
    positive = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    t = threshold_for_sensitivity(p, positive, 0.95)  # 10 positives: no miss allowed
    assert t <= 0.3 and (p[positive] >= t).mean() == 1.0
    assert t > 0.2  # and no lower than needed
    t80 = threshold_for_sensitivity(p, positive, 0.8)  # two misses allowed
    assert (p[positive] >= t80).mean() >= 0.8 and t80 > t
    assert threshold_for_sensitivity(p, np.zeros(12, bool)) == 0.5


def test_weighted_threshold_with_equal_weights_is_the_image_threshold():
    rng = np.random.default_rng(2)
    for n in (1, 5, 14, 40, 97):
        p = rng.uniform(size=n + 10)
        positive = np.r_[np.ones(n, bool), np.zeros(10, bool)]
        for sensitivity in (0.8, 0.95):
            assert (threshold_for_weighted_sensitivity(p, positive, np.ones(n + 10), sensitivity)
                    == threshold_for_sensitivity(p, positive, sensitivity))


def test_the_groups_rule_counts_each_patient_or_publication_once():
    """The default split's shape: 14 validation COVID-19 images, 8 of them one paper's. Per image, every
    one must clear 95 %; per group, the paper's two lowest (2/8 of one group of 7) may stay below it, but
    never a patient with one film."""
    paper = [0.10, 0.12, 0.30, 0.5, 0.6, 0.7, 0.8, 0.9]
    singles = [0.40, 0.55, 0.65, 0.75, 0.85, 0.95]
    p = np.array(paper + singles + [0.2, 0.05])  # two normals
    is_covid = np.r_[np.ones(14, bool), np.zeros(2, bool)]
    groups = ["paper"] * 8 + [f"patient{i}" for i in range(6)] + ["n1", "n2"]
    assert covid_threshold(p, is_covid, 0.95, "images", groups) == threshold_for_sensitivity(p, is_covid) == 0.10
    assert covid_threshold(p, is_covid, 0.95, "groups", groups) == 0.30
    # The lowest film a single patient's: the groups rule must keep it, as the image rule does.
    p_single_low = np.array(paper[2:] + [0.15, 0.16] + singles[:-1] + [0.02] + [0.2, 0.05])
    assert covid_threshold(p_single_low, is_covid, 0.95, "groups", groups) == 0.02
    # Without groups each image is its own.
    assert covid_threshold(p, is_covid, 0.95, "groups", None) == 0.10
    np.testing.assert_allclose(group_weights(["a", "a", "b", "c", "c", "c"]), [1 / 2, 1 / 2, 1, 1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="threshold rule"):
        covid_threshold(p, is_covid, 0.95, "patients", groups)


def test_calibrate_records_the_rule_and_a_refit_keeps_it():
    from cxr.card import ModelCard
    from cxr.train import calibrate

    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(14, int), np.ones(20, int), np.full(20, 2)]  # COVID19, NORMAL, PNEUMONIA
    probs = _softmax(rng.normal(0, 1, (54, 3)) + 2.0 * np.eye(3)[labels])
    groups = ["paper"] * 8 + [f"p{i}" for i in range(6)] + [f"x{i}" for i in range(40)]
    card = ModelCard(name="m", arch="cxrnet", classes=["COVID19", "NORMAL", "PNEUMONIA"], image_size=64)
    images = calibrate(card, probs, labels, groups=groups)
    assert images["threshold_rule"] == "images" and images["covid_found_validation"] == 14
    card.metrics["calibration"] = calibrate(card, probs, labels, groups=groups, threshold_rule="groups")
    by_groups = card.metrics["calibration"]
    assert by_groups["threshold_rule"] == "groups" and by_groups["covid_threshold"] >= images["covid_threshold"]
    assert by_groups["covid_threshold_by_images"] == images["covid_threshold"]
    assert by_groups["covid_group_weighted_sensitivity"] >= 0.95
    assert calibrate(card, probs, labels, groups=groups)["threshold_rule"] == "groups"  # kept unasked
    # What the app says: the rule, and the images actually found (not what the image rule would allow).
    assert "each patient or publication counted once" in describe_threshold(card.covid_threshold, by_groups)
    assert threshold_evidence(by_groups)["found"] == by_groups["covid_found_validation"]
    assert "counted once" not in describe_threshold(card.covid_threshold, images)
