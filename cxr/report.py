"""Metrics broken down by where the NORMAL images came from (NIH archive vs teaching set).

COVID19 and NORMAL images come from different hospitals in this data, so a COVID-vs-normal
score is only convincing if it holds against each normal source separately.
"""

from __future__ import annotations

import numpy as np

from cxr.data import ImageSet
from cxr.metrics import COVID, NORMAL, classification_metrics
from cxr.score_design import covid_score


def normal_source(path_name: str, source: str) -> str:
    """'openist' for the teaching-set normals, 'nih' for the NIH archive, else 'other'."""
    if path_name.startswith("openist_") or source.startswith("OpenIST"):
        return "openist"
    if source.startswith("NIH"):
        return "nih"
    return "other"


def metrics_by_normal_source(
    images: ImageSet, probs: np.ndarray, labels: np.ndarray, covid_threshold: float
) -> dict[str, dict]:
    """For each normal source: metrics on all non-NORMAL images plus that source's normals."""
    if NORMAL not in images.classes or len(images) != len(labels):
        return {}
    normal = images.classes.index(NORMAL)
    sources = np.array([
        normal_source(p.name, s) for p, s in zip(images.paths, images.sources or [""] * len(images))
    ])
    out = {}
    for name in sorted(set(sources[labels == normal])):
        keep = (labels != normal) | (sources == name)
        groups = np.asarray(images.groups, dtype=object)[keep] if len(images.groups) == len(labels) else None
        m = classification_metrics(probs[keep], labels[keep], images.classes, covid_threshold, groups)
        out[name] = {"n_normal": int(((labels == normal) & (sources == name)).sum()),
                     "accuracy": m["accuracy"], "macro_auroc": m["macro_auroc"], "binary": m["binary"]}
    return out


def score_designs(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """AUROC of the ways to turn 3-class probabilities into a COVID score and an 'abnormal' score.

    covid_p:            P(COVID19), COVID-19 vs normal
    covid_vs_normal_p:  P(COVID19) / (P(COVID19) + P(NORMAL)), COVID-19 vs normal (ignores pneumonia mass)
    covid_vs_rest_p:    P(COVID19), COVID-19 vs normal and pneumonia
    abnormal_p:         P(COVID19) + P(PNEUMONIA) = 1 - P(NORMAL), abnormal vs normal
    """
    from sklearn.metrics import roc_auc_score

    if not {COVID, NORMAL} <= set(classes):
        return {}
    c, n = classes.index(COVID), classes.index(NORMAL)
    probs, labels = np.asarray(probs), np.asarray(labels)

    def auroc(mask, positive, score):
        y = positive[mask]
        return round(float(roc_auc_score(y, score[mask])), 4) if 0 < y.sum() < len(y) else None

    pair = (labels == c) | (labels == n)
    return {
        "covid_p": auroc(pair, labels == c, covid_score(probs, classes, "covid_p")),
        "covid_vs_normal_p": auroc(pair, labels == c, covid_score(probs, classes, "covid_vs_normal_p")),
        "covid_vs_rest_p": auroc(np.ones(len(labels), bool), labels == c, covid_score(probs, classes, "covid_p")),
        "abnormal_p": auroc(np.ones(len(labels), bool), labels != n, 1 - probs[:, n]),
    }
