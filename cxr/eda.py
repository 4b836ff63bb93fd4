"""Exploratory statistics of a dataset: class balance and per-image intensity and size statistics.

A scatter of these against the label shows how separable the classes are by trivial cues
(brightness, contrast, image size, aspect ratio): cues a model can learn instead of the lungs.
"""

from __future__ import annotations

import numpy as np

from cxr.data import ImageSet
from cxr.decode import decode_image
from cxr.errors import CxrError


def image_statistics(images: ImageSet) -> list[dict]:
    """One row per readable image: class, source, mean, std, width, height, aspect (w/h)."""
    rows = []
    for path, label, source in zip(images.paths, images.labels, images.sources or [""] * len(images), strict=True):
        try:
            img = decode_image(path)
        except CxrError:
            continue
        height, width = img.shape
        rows.append({"file": path.name, "class": images.classes[label], "source": source or "unknown",
                     "mean": float(img.mean()), "std": float(img.std()),
                     "width": width, "height": height, "aspect": round(width / height, 3)})
    return rows


def aspect_separability(rows: list[dict], positive: str = "COVID19") -> float | None:
    """AUROC of aspect-ratio distance from square for `positive` vs the rest: 0.5 = no shortcut."""
    from sklearn.metrics import roc_auc_score

    y = np.array([r["class"] == positive for r in rows])
    if y.all() or not y.any():
        return None
    score = np.array([abs(np.log(r["aspect"])) for r in rows])
    return float(roc_auc_score(y, score))
