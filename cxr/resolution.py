"""How a model's P(COVID19) depends on the resolution an X-ray arrives at.

Journal figures carry a chest X-ray at a few hundred pixels (`cxr.shortcut.FIGURE_SIDES`), and the
probe's downscale cue draws from that range. `resolution_sweep` shrinks every image to one longest
side at a time and back, and reports, per class, how P(COVID19) moves and how many images stay at or
above the model's threshold. A model that needs fine detail to see COVID-19 loses COVID-19 films
shown at figure resolution, which the probe's mean rise over normals does not show. Meant for the
validation split the card records (`bench/resolution.py`); it reads no test image unless given one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxr.data import ImageSet, decode_readable
from cxr.errors import ModelError
from cxr.metrics import COVID
from cxr.shortcut import shrink_and_restore

SIDES = (160, 220, 300, 420)


def resolution_sweep(predictor, images: ImageSet, sides=SIDES, batch_size: int = 32) -> dict:
    """{"threshold", "n", "median_longest_side", "clean_at_or_above_threshold": {class: share},
    "by_side": {side: {class: {"mean_rise", "shrunk", "at_or_above_threshold", "kept_at_or_above",
    "called_same"}}}}.

    `shrunk`: images larger than `side` (the others are unchanged, and their rise is 0).
    `kept_at_or_above`: of the images at or above the threshold as stored, the share still there
    (None if none was): for COVID-19, the films a model finds that it would still find as figures.
    """
    classes = predictor.classes
    if COVID not in classes:
        raise ModelError(f"{predictor.card.name} has no {COVID} class, so no P({COVID}) to follow.")
    covid, threshold = classes.index(COVID), predictor.card.covid_threshold
    decoded, labels = decode_readable(images)  # unreadable files left out, as training leaves them out
    longest = np.array([max(img.shape) for img in decoded])
    clean = predictor.infer_images(decoded, batch_size)[0]
    found = clean[:, covid] >= threshold
    present = [(k, name) for k, name in enumerate(classes) if (labels == k).any()]
    share = lambda mask: round(float(np.mean(mask)), 4)  # noqa: E731
    out = {"threshold": threshold, "n": {name: int((labels == k).sum()) for k, name in present},
           "median_longest_side": {name: int(np.median(longest[labels == k])) for k, name in present},
           "clean_at_or_above_threshold": {name: share(found[labels == k]) for k, name in present},
           "by_side": {}}
    for side in sides:
        shrunk = [np.asarray(shrink_and_restore(Image.fromarray(img), side)) for img in decoded]
        probs = predictor.infer_images(shrunk, batch_size)[0]
        out["by_side"][int(side)] = {name: {
            "mean_rise": round(float((probs[m, covid] - clean[m, covid]).mean()), 4),
            "shrunk": int((longest[m] > side).sum()),
            "at_or_above_threshold": share(probs[m, covid] >= threshold),
            "kept_at_or_above": (share(probs[m & found, covid] >= threshold) if (m & found).any() else None),
            "called_same": share(probs[m].argmax(1) == clean[m].argmax(1)),
        } for k, name in present for m in [labels == k]}
    return out


def validation_record(predictor, val_set: ImageSet, data, sides=SIDES, batch_size: int = 32) -> dict:
    """The sweep on a model's validation split as its card stores it (`metrics["resolution"]`), with the
    data folder it read: written by `cxr.train.finalize` and by `bench/resolution.py --record`."""
    return {"data": None if data is None else str(data), "split": "validation",
            **resolution_sweep(predictor, val_set, sides, batch_size)}


def recorded_sweep(card) -> dict | None:
    """The sweep stored in the card (by `cxr.train.finalize` when a model is trained, calibrated or
    averaged, or by `bench/resolution.py --record`), if it was made at the card's current threshold (a
    model recalibrated since would be misdescribed by it)."""
    record = card.metrics.get("resolution")
    return record if record and record.get("threshold") == card.covid_threshold else None


def _covid_at(record: dict, side: int) -> dict:
    """The COVID-19 entry of a recorded sweep at `side`; empty where the sweep has no answer there: no
    record, no film found to follow, or no validation film larger than `side` (the sweep then measured
    nothing: the validation images are already that small)."""
    covid = {int(k): v for k, v in record.get("by_side", {}).items()}.get(side, {}).get(COVID, {})
    return covid if covid.get("kept_at_or_above") is not None and covid.get("shrunk") else {}


def _found(record: dict) -> int:
    """How many validation COVID-19 films the model found as stored, from the shares the sweep records."""
    return round(record["clean_at_or_above_threshold"][COVID] * record["n"][COVID])


def kept_at(card, side: int = 300) -> float | None:
    """Of the validation COVID-19 films the model finds as stored, the share it still finds shrunk to
    `side` px, from the card's current record; None where the sweep has no answer there."""
    return _covid_at(recorded_sweep(card) or {}, side).get("kept_at_or_above")


def small_image_note(card, longest_side: int) -> str | None:
    """What the card's recorded resolution sweep (`recorded_sweep`) says about an X-ray whose longest side
    is `longest_side` px, in plain words. None when the image is no smaller than every side swept, or
    when the sweep has no answer at the side it would quote (`_covid_at`).

    Quotes the smallest swept side at or above the image's: the loss it states is the least an image this
    small would suffer, since a smaller figure carries less detail still.
    """
    record = recorded_sweep(card) or {}
    sides = sorted(int(side) for side in record.get("by_side", {}) if int(side) >= longest_side)
    covid = _covid_at(record, sides[0]) if sides else {}
    if not covid:
        return None
    n_found = _found(record)
    return (f"This X-ray is small: {longest_side} px on its longest side (this model's validation COVID-19 films: "
            f"median {record['median_longest_side'][COVID]} px). Shrunk to {sides[0]} px, "
            f"{round(covid['kept_at_or_above'] * n_found)} of the {n_found} it finds at full size stayed at or above "
            f"its threshold {record['threshold']:.2f} (mean change of P(COVID-19) {covid['mean_rise']:+.2f}). At this "
            "size a result below the threshold rules out COVID-19 less than it does on a full-size film.")


def figure_size_sentence(card, side: int = 300) -> str | None:
    """One plain sentence for the model card: of the validation COVID-19 films the model finds as
    stored, how many it still finds shrunk to `side` px (a journal figure's size), from the recorded
    sweep. None where the sweep has no answer there."""
    record = recorded_sweep(card) or {}
    covid = _covid_at(record, side)
    if not covid:
        return None
    n_found = _found(record)
    return (f"Of the {n_found} validation COVID-19 films it finds as stored, "
            f"{round(covid['kept_at_or_above'] * n_found)} stay at or above its threshold shrunk to {side} px, a "
            "journal figure's size: a small COVID-19 figure may be missed, and the Predict page warns on a small "
            "upload. ")
