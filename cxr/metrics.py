"""Evaluation metrics from predicted probabilities (pure numpy + scikit-learn, no model)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

COVID, NORMAL = "COVID19", "NORMAL"


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15):
    """Top-label confidence bins -> (mean confidence, accuracy, count) arrays of non-empty bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            rows.append((confidence[in_bin].mean(), correct[in_bin].mean(), in_bin.sum()))
    if not rows:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    mean_conf, acc, count = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    return mean_conf, acc, count


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins."""
    mean_conf, acc, count = reliability_bins(probs, labels, bins)
    return float((count * np.abs(acc - mean_conf)).sum() / max(len(labels), 1))


def roc_points(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """One-vs-rest ROC of each class present: {class: (fpr, tpr, auroc)}."""
    from sklearn.metrics import roc_curve

    out = {}
    for i, name in enumerate(classes):
        y = labels == i
        if y.any() and not y.all():
            fpr, tpr, _ = roc_curve(y, probs[:, i])
            out[name] = (fpr, tpr, float(roc_auc_score(y, probs[:, i])))
    return out


def groups_found(found: np.ndarray, groups) -> dict:
    """Detection counted once per group (patient, publication): `found` and `groups` per positive image.

    A group counts as found only if every one of its images is. Serial films of one patient, or the
    figures of one paper, are not independent evidence, so the group count is the honest sample size.
    """
    found = np.asarray(found, bool)
    groups = np.asarray(list(groups), dtype=object)
    names, sizes = np.unique(groups, return_counts=True)
    n_found = sum(bool(found[groups == name].all()) for name in names)
    return {"groups": int(len(names)), "groups_found": int(n_found),
            "largest_group": int(sizes.max()) if len(sizes) else 0}


def binary_covid_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], threshold: float, groups=None
) -> dict | None:
    """COVID19 vs NORMAL on the images of those two classes; score = P(COVID19).

    Given every image's group (patient or publication), the COVID-19 sensitivity is also counted
    once per group (`covid_groups`, `covid_groups_found`, `sensitivity_group_ci`).
    """
    if COVID not in classes or NORMAL not in classes:
        return None
    covid, normal = classes.index(COVID), classes.index(NORMAL)
    keep = (labels == covid) | (labels == normal)
    y = labels[keep] == covid
    score = probs[keep, covid]
    if y.all() or not y.any():
        return None
    pred = score >= threshold
    n_covid, n_normal = int(y.sum()), int((~y).sum())
    found, cleared = int(pred[y].sum()), int((~pred[~y]).sum())
    grouped = {}
    if groups is not None and len(groups) == len(labels):
        g = groups_found(pred[y], np.asarray(list(groups), dtype=object)[keep][y])
        grouped = {"covid_groups": g["groups"], "covid_groups_found": g["groups_found"],
                   "covid_largest_group": g["largest_group"],
                   "sensitivity_group_ci": proportion_ci(g["groups_found"], g["groups"])}
    return {
        "n": int(keep.sum()),
        "auroc": float(roc_auc_score(y, score)),
        "accuracy": float((pred == y).mean()),
        "sensitivity": found / n_covid,
        "specificity": cleared / n_normal,
        "threshold": float(threshold),
        "n_covid": n_covid,
        "n_normal": n_normal,
        "sensitivity_ci": proportion_ci(found, n_covid),
        "specificity_ci": proportion_ci(cleared, n_normal),
        **grouped,
    }


def proportion_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) confidence interval of successes / n; None when n is 0.

    Exact, because the counts here are small: 25 test and 14 validation COVID-19 images, where
    "all found" still leaves the true sensitivity anywhere from 86 % or 77 % up.
    """
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="exact")
    return round(float(ci.low), 4), round(float(ci.high), 4)


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: list[str], covid_threshold: float = 0.5, groups=None
) -> dict:
    """The `evaluate --json` object: accuracy, macro AUROC, per-class, confusion, binary, ECE.

    probs: (N, C) class probabilities in `classes` order; labels: (N,) int class indices; groups:
    optional, each image's patient or publication (see `binary_covid_metrics`).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    pred = probs.argmax(axis=1)
    index = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=index, zero_division=0)
    try:
        if len(classes) == 2:
            macro_auroc = float(roc_auc_score(labels, probs[:, 1]))
        else:
            macro_auroc = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=index))
    except ValueError:
        macro_auroc = None  # a class absent from the labels: AUROC undefined
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()) if len(labels) else None,
        "balanced_accuracy": float(np.mean([recall[i] for i in index if support[i] > 0])),
        "macro_auroc": macro_auroc,
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion": {"labels": list(classes), "matrix": confusion_matrix(labels, pred, labels=index).tolist()},
        "binary": binary_covid_metrics(probs, labels, classes, covid_threshold, groups),
        "ece": expected_calibration_error(probs, labels),
    }
