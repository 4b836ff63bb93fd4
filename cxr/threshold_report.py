"""Which validation COVID-19 images set a model's COVID-19 threshold, and how far one group moves it.

The threshold is fitted on the validation split the model's card records, for a target sensitivity:
with fewer than 20 COVID-19 images every one must clear it, so the lowest one sets it. Images of one
patient, or one paper's figures, are not independent, so the report counts groups (the manifest's
`group_id`) and refits the threshold with each group left out: a threshold that jumps when one
group goes rests on that group alone. Validation images only; the test split is never read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxr.calibration import covid_threshold, threshold_rule_of
from cxr.decode import decode_image
from cxr.errors import ModelError
from cxr.metrics import COVID, groups_found


def threshold_report(predictor, data_path: Path | None = None) -> dict:
    """The validation COVID-19 images behind `predictor`'s threshold, lowest P(COVID19) first.

    `data_path` stands in for the training data the card records (its fingerprint must match).
    {"model", "card_threshold", "refitted_threshold", "target_sensitivity", "threshold_rule", "n_covid_validation",
     "groups", "groups_found", "largest_group",
     "images": [{"file", "path", "group", "p_covid", "called", "p_called"}] (called: the most probable class),
     "threshold_without_group": {group: {"images", "threshold"}}, highest threshold first}.
    """
    from cxr.train import recorded_split

    card = predictor.card
    if COVID not in card.classes:
        raise ModelError(f"{card.name} has no {COVID} class, so no COVID-19 threshold.")
    val = recorded_split(card, data_path)[1]
    covid = card.classes.index(COVID)
    keep = [i for i, label in enumerate(val.labels) if label == covid]
    paths = [val.paths[i] for i in keep]
    groups = np.array([val.groups[i] for i in keep], dtype=object)  # load_imageset gives every image one
    probs = predictor.predict_proba([decode_image(p) for p in paths])
    p_covid = probs[:, covid]
    # What the model calls each image: a COVID-19 film it calls pneumonia sets the threshold for a
    # different reason (the classes overlap) than one it calls normal (a film that shows little).
    called = probs.argmax(axis=1)
    calibration = card.metrics.get("calibration") or {}
    target = calibration.get("target_sensitivity", 0.95)
    rule = threshold_rule_of(card)  # refit the way the card's threshold was set
    all_positive = np.ones(len(paths), bool)
    threshold = covid_threshold(p_covid, all_positive, target, rule, groups)
    left_out = {}
    for name in sorted(set(groups)):
        rest = groups != name
        left_out[str(name)] = {"images": int((~rest).sum()),
                               "threshold": covid_threshold(p_covid[rest], all_positive[rest], target, rule,
                                                            groups[rest])}
    order = np.argsort(p_covid, kind="stable")
    return {
        "model": card.name, "card_threshold": card.covid_threshold, "refitted_threshold": threshold,
        "target_sensitivity": target, "threshold_rule": rule, "n_covid_validation": len(paths),
        **groups_found(p_covid >= threshold, groups),
        "images": [{"file": paths[i].name, "path": str(paths[i]), "group": str(groups[i]),
                    "p_covid": round(float(p_covid[i]), 4), "called": card.classes[called[i]],
                    "p_called": round(float(probs[i, called[i]]), 4)} for i in order],
        "threshold_without_group": dict(sorted(left_out.items(), key=lambda kv: -kv[1]["threshold"])),
    }


def describe_lowest(report: dict) -> str | None:
    """A sentence when the image that sets the threshold is called another class than COVID-19, else None.

    Then the threshold is not set by a film that shows little but by one the model reads as, say,
    pneumonia: to catch it, every X-ray at least that COVID-19-like is flagged, whatever it is called.
    """
    images = report.get("images") or []
    # The lowest image the threshold keeps: the lowest of all unless the rule lets some stay below it.
    threshold = report.get("refitted_threshold")
    lowest = next((i for i in images if threshold is None or i["p_covid"] >= threshold), None)
    if lowest is None or lowest.get("called", COVID) == COVID:
        return None
    return (f"The image that sets the threshold, {lowest['file']}, is called {lowest['called']} by this model "
            f"({lowest['p_called']:.0%}). To catch it, the threshold sits at its P(COVID-19) "
            f"({lowest['p_covid']:.3f}), and any X-ray scoring at least that much is flagged as COVID-19, "
            "whichever class it is called.")
