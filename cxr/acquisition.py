"""The same chest X-ray as another hospital might store it: other exposure, windowing, positioning.

The benches use these to ask whether a model, or its OOD gate, holds up on X-rays from elsewhere.
Training never makes these exact changes: its augmentation varies gamma within exp(+-0.35) and
rotates the lung view by up to 7 degrees; these go a little further (gamma 1.6 and 0.6, contrast
0.6, the whole image rotated by 8 degrees, corners black as a rotated scan's are).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

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
    covid = classes.index("COVID19") if "COVID19" in classes else None
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
