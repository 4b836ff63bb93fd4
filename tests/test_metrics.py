import numpy as np
import pytest

from cxr.metrics import binary_covid_metrics, classification_metrics, expected_calibration_error

CLASSES = ["COVID19", "NORMAL", "PNEUMONIA"]


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[labels]
    m = classification_metrics(probs, labels, CLASSES)
    assert m["accuracy"] == 1.0 and m["macro_auroc"] == 1.0 and m["ece"] == pytest.approx(0.0)
    assert m["confusion"]["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert m["per_class"]["NORMAL"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["binary"]["auroc"] == 1.0 and m["binary"]["n"] == 4


def test_confusion_rows_are_true_labels():
    labels = np.array([0, 0, 1])
    probs = np.array([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    m = classification_metrics(probs, labels, CLASSES)
    assert m["confusion"]["matrix"][0] == [1, 1, 0]
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_binary_metrics_at_threshold():
    labels = np.array([0, 0, 1, 1, 2])
    probs = np.array([[0.9, 0.1, 0], [0.4, 0.6, 0], [0.3, 0.7, 0], [0.6, 0.4, 0], [0.99, 0, 0.01]])
    b = binary_covid_metrics(probs, labels, CLASSES, threshold=0.5)
    # Pneumonia is excluded; COVID scores 0.9, 0.4; NORMAL scores 0.3, 0.6.
    assert b["n"] == 4 and b["sensitivity"] == 0.5 and b["specificity"] == 0.5
    assert b["auroc"] == pytest.approx(0.75)


def test_binary_is_none_without_covid_or_normal():
    assert binary_covid_metrics(np.eye(2), np.array([0, 1]), ["A", "B"], 0.5) is None


def test_ece_of_overconfident_model():
    labels = np.array([0, 1] * 50)
    probs = np.tile([[0.9, 0.1]], (100, 1))  # always 90 % sure of class 0, right half the time
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_score_designs_auroc():
    from cxr.report import score_designs

    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.1, 0.3], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.3, 0.1, 0.6]])
    labels = np.array([0, 0, 1, 1, 2])
    s = score_designs(probs, labels, classes)
    assert s["covid_p"] == 1.0 and s["covid_vs_normal_p"] == 1.0 and s["abnormal_p"] == 1.0
    assert s["covid_vs_rest_p"] == 1.0
    flipped = score_designs(probs[:, [1, 0, 2]], labels, classes)
    assert flipped["covid_p"] == 0.0
    assert score_designs(probs, labels, ["A", "B", "C"]) == {}


def test_exact_intervals_of_small_counts():
    from cxr.metrics import proportion_ci

    # All 14 found: the lower bound solves p^14 = 0.025 (Clopper-Pearson), i.e. 0.768.
    assert proportion_ci(14, 14) == (0.7684, 1.0)
    assert proportion_ci(0, 10) == (0.0, 0.3085)
    lo, hi = proportion_ci(112, 154)
    assert lo < 112 / 154 < hi and hi - lo < 0.16
    assert proportion_ci(0, 0) is None


def test_binary_metrics_carry_counts_and_intervals():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    b = binary_covid_metrics(probs, np.array([0, 0, 1, 1]), ["COVID19", "NORMAL"], threshold=0.5)
    assert (b["n_covid"], b["n_normal"]) == (2, 2)
    assert b["sensitivity"] == 0.5 and b["sensitivity_ci"][0] < 0.5 < b["sensitivity_ci"][1]
    assert b["specificity"] == 0.5


def test_threshold_evidence_reads_the_card():
    from cxr.calibration import threshold_evidence

    evidence = threshold_evidence({"n_covid_validation": 14, "target_sensitivity": 0.95})
    assert evidence == {"target_sensitivity": 0.95, "found": 14, "n": 14, "sensitivity_ci": (0.7684, 1.0)}
    assert threshold_evidence({"n_covid_validation": 40, "target_sensitivity": 0.95})["found"] == 38
    assert threshold_evidence({"temperature": 1.0}) is None


def test_threshold_evidence_counts_each_patient_or_publication_once():
    from cxr.calibration import covid_group_counts, grouped_evidence_note, threshold_evidence

    # Five COVID-19 images from three groups (one paper gave three); a normal in its own group.
    p_covid = np.array([0.30, 0.20, 0.25, 0.10, 0.90, 0.60])
    is_covid = np.array([1, 1, 1, 1, 0, 1], bool)
    groups = ["paper", "paper", "paper", "p2", "nih", "p3"]
    counts = covid_group_counts(p_covid, is_covid, groups, threshold=0.15)
    # "p2" has its one image below 0.15; "paper" and "p3" have every image at or above it.
    assert counts == {"n_covid_validation_groups": 3, "covid_groups_found": 2, "covid_largest_group": 3}
    # The shipped model's case: 14 of 14 found, but from 7 groups, 8 from one paper.
    card = {"n_covid_validation": 14, "target_sensitivity": 0.95, "n_covid_validation_groups": 7,
            "covid_groups_found": 7, "covid_largest_group": 8}
    evidence = threshold_evidence(card)
    assert evidence["sensitivity_ci"] == (0.7684, 1.0) and evidence["group_sensitivity_ci"] == (0.5904, 1.0)
    note = grouped_evidence_note(evidence)
    assert "only 7 patients or publications (8 from one)" in note and "as low as 59%" in note
    # One image per group says nothing new; older cards have no groups.
    assert grouped_evidence_note(threshold_evidence({**card, "n_covid_validation_groups": 14})) == ""
    assert grouped_evidence_note(threshold_evidence({"n_covid_validation": 14})) == ""


def test_binary_metrics_count_covid_sensitivity_per_group():
    # Classes COVID19, NORMAL; four COVID-19 images from two papers, one missed; two normals.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    groups = ["a", "a", "b", "b", "n1", "n2"]
    b = binary_covid_metrics(probs, labels, ["COVID19", "NORMAL"], threshold=0.5, groups=groups)
    assert b["sensitivity"] == 0.75  # 3 of 4 images
    assert (b["covid_groups"], b["covid_groups_found"], b["covid_largest_group"]) == (2, 1, 2)  # "b" lost one
    assert b["sensitivity_group_ci"][0] < b["sensitivity_ci"][0]  # fewer units, a wider interval
    assert "covid_groups" not in binary_covid_metrics(probs, labels, ["COVID19", "NORMAL"], threshold=0.5)
