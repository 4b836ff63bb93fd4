"""cxr.score_design: the COVID-19 score designs and each one's operating point, fitted on validation."""

import numpy as np
import pytest

from cxr.errors import ModelError
from cxr.score_design import DESIGNS, covid_score, operating_points

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def test_the_designs_score_as_documented():
    probs = np.array([[0.2, 0.1, 0.7], [0.5, 0.5, 0.0]])
    assert covid_score(probs, CLASSES, "covid_p") == pytest.approx([0.2, 0.5])
    assert covid_score(probs, CLASSES, "covid_vs_normal_p") == pytest.approx([2 / 3, 0.5])
    # Another class order gives the same scores.
    swapped = probs[:, [2, 0, 1]]
    assert covid_score(swapped, ["PNEUMONIA", "COVID19", "NORMAL"], "covid_vs_normal_p") == pytest.approx([2 / 3, 0.5])


def test_unknown_designs_and_models_without_the_classes_are_refused():
    with pytest.raises(ValueError, match="covid_vs_normal_p"):
        covid_score(np.ones((1, 3)) / 3, CLASSES, "abnormal")
    with pytest.raises(ModelError, match="NORMAL"):
        covid_score(np.ones((1, 2)) / 2, ["COVID19", "PNEUMONIA"])
    with pytest.raises(ModelError, match="validation"):
        operating_points(np.array([[0.1, 0.9, 0.0]]), np.array([1]), {}, CLASSES)


def test_a_covid_film_read_as_pneumonia_sets_the_covid_p_threshold_but_not_the_other():
    # Validation: two COVID-19 films, one read as pneumonia (P(COVID19) 0.2); two normals at 0.3 and 0.05.
    val = np.array([[0.8, 0.1, 0.1], [0.2, 0.05, 0.75], [0.3, 0.7, 0.0], [0.05, 0.95, 0.0]])
    labels = np.array([0, 0, 1, 1])
    test = {"normals": np.array([[0.25, 0.75, 0.0], [0.1, 0.9, 0.0]]), "pneumonias": np.array([[0.1, 0.01, 0.89]])}
    points = operating_points(val, labels, test, CLASSES)
    assert set(points) == set(DESIGNS)
    p, vs = points["covid_p"], points["covid_vs_normal_p"]
    assert p["threshold"] == 0.2  # the film read as pneumonia sets both: 0.2, and 0.2 / (0.2 + 0.05) = 0.8
    assert vs["threshold"] == pytest.approx(0.8, abs=1e-4)
    assert p["validation_flagged"] == {"COVID19": 1.0, "NORMAL": 0.5}  # the 0.3 normal is above 0.2
    assert vs["validation_flagged"] == {"COVID19": 1.0, "NORMAL": 0.0}  # 0.3 / 1.0 is below 0.8
    assert p["flagged"] == {"normals": 0.5, "pneumonias": 0.0}
    assert vs["flagged"] == {"normals": 0.0, "pneumonias": 1.0}  # the cost: 0.1 / 0.11 flags the pneumonia
    assert p["n"] == {"normals": 2, "pneumonias": 1}


def test_each_design_is_thresholded_by_the_cards_rule():
    """A card calibrated with --threshold-rule groups: the bench refits each design the same way, so the
    served design's threshold is the card's (one paper's two lowest films may stay below it)."""
    from cxr.calibration import covid_threshold

    p_covid = np.array([0.10, 0.12, 0.30, 0.5, 0.6, 0.7, 0.8, 0.9, 0.40, 0.55, 0.65, 0.75, 0.85, 0.95])
    val = np.stack([p_covid, (1 - p_covid) / 2, (1 - p_covid) / 2], axis=1)
    val = np.concatenate([val, [[0.05, 0.9, 0.05]]])
    labels = np.r_[np.zeros(14, int), 1]
    groups = ["paper"] * 8 + [f"patient{i}" for i in range(6)] + ["normal"]
    by_images = operating_points(val, labels, {}, CLASSES)
    by_groups = operating_points(val, labels, {}, CLASSES, rule="groups", val_groups=groups)
    assert by_images["covid_p"]["threshold"] == 0.10
    assert by_groups["covid_p"]["threshold"] == covid_threshold(val[:, 0], labels == 0, 0.95, "groups", groups) == 0.30
    assert by_groups["covid_p"]["validation_flagged"]["COVID19"] == pytest.approx(12 / 14, abs=1e-4)
