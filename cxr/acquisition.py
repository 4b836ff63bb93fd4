"""The same chest X-ray as another hospital might store it: other exposure, windowing, positioning.

The benches use these to ask whether a model, or its OOD gate, holds up on X-rays from elsewhere,
and every trained model is scored on them on its validation split (`on_validation`), so that
robustness counts when models are compared (`cxr.selection.model_score`).
Training never makes these exact changes: its augmentation varies gamma within exp(+-0.35) and
rotates the lung view by up to 7 degrees; these go a little further (gamma 1.6 and 0.6, contrast
0.6, the whole image rotated by 8 degrees, corners black as a rotated scan's are).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxr.metrics import COVID

CHANGES = ("darker", "brighter", "low_contrast", "rotated")


def change(img: np.ndarray, name: str, index: int = 0) -> np.ndarray:
    """(H, W) uint8 -> the same shape, changed; `index` alternates the rotation's direction."""
    if name == "darker":
        return (255 * (img / 255.0) ** 1.6).astype(np.uint8)
    if name == "brighter":
        return (255 * (img / 255.0) ** 0.6).astype(np.uint8)
    if name == "low_contrast":
        return np.clip((img - 128.0) * 0.6 + 128, 0, 255).astype(np.uint8)
    if name == "rotated":
        return np.asarray(Image.fromarray(img).rotate(8 if index % 2 else -8, Image.Resampling.BILINEAR))
    raise ValueError(f"unknown change {name!r}; choose from {CHANGES}")


def robustness(probs: np.ndarray, changed: dict[str, np.ndarray], labels: np.ndarray, classes: list[str],
               covid_threshold: float | None = None) -> dict:
    """How predictions move when the X-rays change: per change and true class, the mean change of
    P(true class) and of P(COVID19), the accuracy before and after and, for COVID-19 images, the
    share that fall from above the threshold to below it (for the others, that rise above it)."""
    labels = np.asarray(labels)
    covid = classes.index(COVID) if COVID in classes else None
    out = {}
    for name, after in changed.items():
        per = {}
        for i, cls in enumerate(classes):
            rows = labels == i
            if not rows.any():
                continue
            before_c, after_c = probs[rows], after[rows]
            entry = {"n": int(rows.sum()),
                     "mean_change_own_class": round(float((after_c[:, i] - before_c[:, i]).mean()), 4),
                     "accuracy_before": round(float((before_c.argmax(1) == i).mean()), 4),
                     "accuracy_after": round(float((after_c.argmax(1) == i).mean()), 4)}
            if covid is not None:
                entry["mean_change_covid"] = round(float((after_c[:, covid] - before_c[:, covid]).mean()), 4)
                if covid_threshold is not None:
                    was, now = before_c[:, covid] >= covid_threshold, after_c[:, covid] >= covid_threshold
                    crossed = (was & ~now) if i == covid else (~was & now)
                    entry["crossed_threshold"] = round(float(crossed.mean()), 4)
            per[cls] = entry
        out[name] = per
    return out


def on_validation(predictor, images, batch_size: int = 32) -> dict:
    """Calibrated metrics of `predictor` on every change of the labelled `images` (its validation
    split): per change the log-loss, accuracy, the share of COVID-19 images still at or above the
    COVID-19 threshold and of normals below it; `mean_log_loss` over the changes. Unreadable files
    are left out, as training leaves them out."""
    from cxr.calibration import nll
    from cxr.data import decode_readable
    from cxr.selection import normals_below

    decoded, labels = decode_readable(images)
    classes, threshold = predictor.classes, predictor.card.covid_threshold
    covid = classes.index(COVID) if COVID in classes else None
    per = {}
    for name in CHANGES:
        probs = predictor.infer_images((change(img, name, i) for i, img in enumerate(decoded)), batch_size)[0]
        entry = {"n": int(len(labels)), "log_loss": round(nll(probs, labels), 4) if len(labels) else None,
                 "accuracy": round(float((probs.argmax(1) == labels).mean()), 4) if len(labels) else None}
        if covid is not None and (labels == covid).any():
            entry["covid_at_or_above_threshold"] = round(float((probs[labels == covid, covid] >= threshold).mean()), 4)
        entry["normal_below_threshold"] = normals_below(probs, labels, classes, threshold)
        per[name] = entry
    losses = [e["log_loss"] for e in per.values() if e["log_loss"] is not None]
    return {"changes": per, "mean_log_loss": round(float(np.mean(losses)), 4) if losses else None}


LABELS = {"darker": "darker", "brighter": "brighter", "low_contrast": "lower contrast", "rotated": "rotated 8°"}


def describe(card) -> str | None:
    """How the model held up on its validation X-rays stored as another hospital might, in plain
    words (None for a card from before this was measured)."""
    measured = card.metrics.get("validation_acquisition")
    clean = card.metrics.get("calibration", {}).get("nll_after")
    if not measured or measured.get("mean_log_loss") is None:
        return None
    changes = measured["changes"]
    text = (f"On its validation X-rays made darker, brighter, lower in contrast or rotated 8°, log-loss "
            f"{measured['mean_log_loss']:.3f} on average" + (f" (as stored: {clean:.3f})" if clean is not None else ""))
    found = {k: v["covid_at_or_above_threshold"] for k, v in changes.items() if "covid_at_or_above_threshold" in v}
    if found:
        worst = min(found, key=found.get)
        text += (f". COVID-19 images still at or above the threshold: {found[worst]:.0%} when {LABELS[worst]}, "
                 f"the worst change")
        if found[worst] < 0.95:
            text += " (the threshold was set for 95%: on X-rays stored differently, expect more misses)"
    return text + "."
