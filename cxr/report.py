"""Metrics broken down by where the NORMAL images came from (NIH archive vs teaching set).

COVID19 and NORMAL images come from different hospitals in this data, so a COVID-vs-normal
score is only convincing if it holds against each normal source separately.
"""

from __future__ import annotations

import numpy as np

from cxr.data import ImageSet
from cxr.metrics import NORMAL, classification_metrics


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
        m = classification_metrics(probs[keep], labels[keep], images.classes, covid_threshold)
        out[name] = {"n_normal": int(((labels == normal) & (sources == name)).sum()),
                     "accuracy": m["accuracy"], "macro_auroc": m["macro_auroc"], "binary": m["binary"]}
    return out
