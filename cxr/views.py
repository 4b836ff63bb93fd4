"""Test-time views: the box an X-ray is cropped to, seen a little larger, smaller and shifted,
with the class logits averaged over the views.

Why: with ~14 validation COVID-19 images, the COVID-19 threshold (95 % sensitivity) is set by the
lowest one, so the noise of a single score moves it; one view's score also depends on exactly where
the lung box landed. Views that differ by what training's augmentation already varies (zoom
0.9-1.15, shift up to 0.06) lower that noise for every image and for the threshold alike
(models/README.md, "Averaging over views of the lung box"). The views are re-cropped from the
original, so a larger box shows real pixels around the lungs, not black.

A model's views are recorded on its card (`test_time_views`), so calibration, evaluation, the
probe, the benches and the app all score an image the same way. Saliency, the templates and the
OOD gate read the first view, which is always the box itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr.errors import ModelError

IDENTITY = (1.0, 0.0, 0.0)  # (scale, shift_x, shift_y): the box as it is
# Training's augmentation zooms by 0.9-1.15 and shifts by up to 0.06 of the side; a view far
# outside that asks the model about images it never saw.
MAX_SCALE_STEP = 0.5
MAX_SHIFT = 0.25


def grid(scales: Sequence[float] = (1.0,), shift: float = 0.0) -> list[tuple[float, float, float]]:
    """Views at every scale of the box (> 1 shows more around the lungs), each also shifted left and
    right by `shift` (fraction of the box's side) when it is not 0; the box itself first. One view
    (the box itself) gives []: the model's plain single view."""
    shifts = (0.0, -shift, shift) if shift else (0.0,)
    views = [(float(s), float(dx), 0.0) for s in scales for dx in shifts]
    views = sorted(set(views), key=lambda v: (v != IDENTITY, views.index(v)))
    return [] if views == [IDENTITY] else check_views(views)


def check_views(views: Sequence[Sequence[float]]) -> list[tuple[float, float, float]]:
    """`views` as (scale, shift_x, shift_y) tuples; raises ModelError unless the first is the box itself
    and every one stays near what training's augmentation showed. An empty list means one view."""
    out = [tuple(float(v) for v in view) for view in views]
    if not out:
        return []
    if any(len(view) != 3 for view in out):
        raise ModelError("A test-time view is three numbers: scale, horizontal shift, vertical shift.")
    if out[0] != IDENTITY:
        raise ModelError("The first test-time view must be the box itself (scale 1, no shift).")
    for scale, dx, dy in out:
        if not (1 - MAX_SCALE_STEP <= scale <= 1 + MAX_SCALE_STEP) or max(abs(dx), abs(dy)) > MAX_SHIFT:
            raise ModelError(f"Test-time view (scale {scale:g}, shift {dx:g}, {dy:g}) is too far from the box: "
                             f"scale must lie in {1 - MAX_SCALE_STEP:g}-{1 + MAX_SCALE_STEP:g} and shifts within "
                             f"{MAX_SHIFT:g} of its side.")
    if len(set(out)) != len(out):
        raise ModelError("The test-time views repeat one another.")
    return out


def view_boxes(box: tuple[int, int, int, int], views) -> list[tuple[int, int, int, int]]:
    """The box of the original each view crops: `box` (left, top, right, bottom) scaled about its centre
    by the view's scale and shifted by its shifts (fractions of the box's side); it may leave the frame
    (black there, as `cxr.preprocess.crop_box` fills it)."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    cx, cy = (left + right) / 2, (top + bottom) / 2
    out = []
    for scale, dx, dy in views or [IDENTITY]:
        if (scale, dx, dy) == IDENTITY:
            out.append(tuple(box))
            continue
        x0, y0 = cx + dx * w - w * scale / 2, cy + dy * h - h * scale / 2
        out.append((int(round(x0)), int(round(y0)), int(round(x0 + w * scale)), int(round(y0 + h * scale))))
    return out


def average(probs: np.ndarray, count: int) -> np.ndarray:
    """(N * K, C) probabilities, each image's K views together -> (N, C): the softmax of the views'
    mean log-probability, which is the softmax of their mean logits."""
    probs = np.asarray(probs, np.float64)
    log_probs = np.log(np.clip(probs, 1e-12, 1.0)).reshape(-1, count, probs.shape[1]).mean(axis=1)
    log_probs -= log_probs.max(axis=1, keepdims=True)
    exp = np.exp(log_probs)
    return exp / exp.sum(axis=1, keepdims=True)


def scales_and_shift(views: Sequence[tuple[float, float, float]]) -> tuple[str, float]:
    """The views' scales in words ("0.92, 1, 1.08") and their largest shift (a fraction of the box's
    side; 0 for none): what `describe` and the model card's text say of them."""
    scales = sorted({s for s, _, _ in views})
    shift = max((abs(s) for _, dx, dy in views for s in (dx, dy)), default=0.0)
    return ", ".join(f"{s:g}" for s in scales), shift


def describe(views: Sequence[tuple[float, float, float]]) -> str:
    """Plain words for the card and the app: '' for one view."""
    if len(views) <= 1:
        return ""
    scales, shift = scales_and_shift(views)
    text = f"probabilities averaged over {len(views)} views (the box scaled by {scales}"
    return text + (f", shifted by up to {shift:.0%} of its side)" if shift else ")")
