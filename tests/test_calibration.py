"""Temperature scaling and the COVID-19 operating threshold (cxr.calibration)."""

from __future__ import annotations

import numpy as np

from cxr.calibration import fit_temperature, nll, threshold_for_sensitivity
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
