"""Ways to turn a 3-class model's probabilities into the one COVID-19 score a threshold is set on.

`covid_p` is what the library serves: P(COVID19). `covid_vs_normal_p`, P(COVID19) / (P(COVID19) +
P(NORMAL)), asks only "COVID-19 rather than normal?" and ignores the pneumonia mass. They differ on
a COVID-19 film the model reads as pneumonia (diffuse opacity in both lungs): low on the first,
high on the second. The threshold, fitted on validation to catch every COVID-19 image, is set by
such a film; so each design trades normals kept below it against pneumonias flagged as COVID-19.
`operating_points` measures that trade, with each design's own threshold fitted the same way.
"""

from __future__ import annotations

import numpy as np

from cxr.calibration import covid_threshold
from cxr.errors import ModelError
from cxr.metrics import COVID, NORMAL

DESIGNS = ("covid_p", "covid_vs_normal_p")


def covid_score(probs: np.ndarray, classes: list[str], design: str = "covid_p") -> np.ndarray:
    """The COVID-19 score of each row of `probs` (N, C) under `design` (one of DESIGNS)."""
    if not {COVID, NORMAL} <= set(classes):
        raise ModelError(f"A COVID-19 score needs the classes {COVID} and {NORMAL}; this model has {classes}.")
    probs = np.asarray(probs, np.float64)
    c, n = classes.index(COVID), classes.index(NORMAL)
    if design == "covid_p":
        return probs[:, c]
    if design == "covid_vs_normal_p":
        return probs[:, c] / np.clip(probs[:, c] + probs[:, n], 1e-12, None)
    raise ValueError(f"Unknown COVID-19 score design {design!r}; one of {', '.join(DESIGNS)}.")


def operating_points(val_probs: np.ndarray, val_labels: np.ndarray, sets: dict[str, np.ndarray],
                     classes: list[str], sensitivity: float = 0.95, rule: str = "images",
                     val_groups: list[str] | None = None) -> dict:
    """For each design: its threshold fitted on validation for `sensitivity` by `rule` (as `calibrate`
    fits P(COVID19)'s; "groups" needs `val_groups`), the share of each validation class it flags, and the
    share of each named set of images (probabilities (N, C), e.g. the test normals made to look like
    figures) it flags.

    {design: {"threshold", "validation_flagged": {class: share}, "flagged": {set: share}, "n": {set: N}}}
    """
    val_labels = np.asarray(val_labels)
    covid = classes.index(COVID) if COVID in classes else None
    if covid is None or not (val_labels == covid).any():
        raise ModelError("Fitting a COVID-19 threshold needs COVID-19 images in the validation split.")
    out = {}
    for design in DESIGNS:
        val_scores = covid_score(val_probs, classes, design)
        t = covid_threshold(val_scores, val_labels == covid, sensitivity, rule, val_groups)
        out[design] = {
            "threshold": t,
            "validation_flagged": {name: _share(val_scores[val_labels == k] >= t)
                                   for k, name in enumerate(classes) if (val_labels == k).any()},
            "flagged": {name: _share(covid_score(p, classes, design) >= t) for name, p in sets.items()},
            "n": {name: int(len(p)) for name, p in sets.items()},
        }
    return out


def _share(mask: np.ndarray) -> float | None:
    return round(float(np.mean(mask)), 4) if len(mask) else None
