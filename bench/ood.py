"""Out-of-distribution gate of a model: which non-chest images it flags, and how many real X-rays.

    python bench/ood.py [--model NAME_OR_PATH] [--data DIR] [--split test]

Nine kinds of non-chest image, all made here or bundled with scikit-image (no downloads): colour
photographs, grey photographs, documents, textures, microscopy, another body part (retina), noise,
blank images and synthetic patterns. A kind counts as flagged when >= 80 % of its images are.
The real X-rays are the labelled split (internal test by default), as they are and changed the ways
X-rays from other hospitals and journals differ (still chest X-rays: they must not be flagged
either): each journal-figure cue alone and all at once, and four changes no training step makes
(darker, brighter, lower contrast, rotated). Prints JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

KIND_FLAGGED = 0.8


def _grey(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
    if a.max() <= 1.0:
        a = a * 255
    return np.clip(a, 0, 255).astype(np.uint8)


def non_chest_samples(seed: int = 0) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{kind: [(name, (H, W) uint8 image)]}: what a chest X-ray model must refuse to read."""
    import skimage.data as sd

    rng = np.random.default_rng(seed)
    side = 512
    ramp = np.linspace(0, 255, side)
    pick = lambda *names: [(n, _grey(getattr(sd, n)())) for n in names]  # noqa: E731
    return {
        "colour_photo": pick("astronaut", "chelsea", "coffee", "rocket", "horse"),
        "grey_photo": pick("camera", "moon", "coins", "clock"),
        "document": pick("page", "text"),
        "texture": pick("brick", "grass", "gravel"),
        "microscopy": pick("immunohistochemistry", "hubble_deep_field"),
        "other_body_part": pick("retina", "microaneurysms"),
        "noise": [("uniform", rng.integers(0, 256, (side, side), dtype=np.uint8)),
                  ("gaussian", np.clip(rng.normal(128, 40, (side, side)), 0, 255).astype(np.uint8)),
                  ("salt_pepper", (rng.random((side, side)) < 0.5).astype(np.uint8) * 255)],
        "blank": [("black", np.zeros((side, side), np.uint8)), ("white", np.full((side, side), 255, np.uint8)),
                  ("grey", np.full((side, side), 128, np.uint8))],
        "pattern": [("checkerboard", _grey(sd.checkerboard())), ("ramp", np.tile(ramp, (side, 1)).astype(np.uint8)),
                    ("stripes", (np.sin(ramp / 6)[None, :] * 127 + 128).repeat(side, 0).astype(np.uint8)),
                    ("phantom", _grey(sd.shepp_logan_phantom()))],
    }


def xray_variants(decoded: list[np.ndarray], seed: int = 0):
    """(name, images) for each way of changing real X-rays that must not make them "not a chest X-ray"."""
    from cxr.acquisition import CHANGES, change
    from cxr.shortcut import KINDS, TRAINING_KINDS, degrade

    for kind in KINDS:
        rng = np.random.default_rng(seed)
        yield kind, [degrade(img, (kind,), rng) for img in decoded]
    rng = np.random.default_rng(seed)
    yield "journal_figure", [degrade(img, TRAINING_KINDS, rng) for img in decoded]
    # Exposure, windowing and positioning differ between hospitals; no training cue makes these.
    for name in CHANGES:
        yield name, [change(img, name, i) for i, img in enumerate(decoded)]


def ood_report(predictor, data: Path, split: str, seed: int = 0) -> dict:
    from bench.common import decoded_split

    def scores(imgs: list[np.ndarray]) -> np.ndarray:
        return predictor.ood_scores(predictor.gate_features(imgs))

    if predictor.gate is None:
        raise SystemExit(f"{predictor.card.name} has no OOD gate; run `python -m cxr calibrate` on it first.")
    kinds = {}
    for kind, samples in non_chest_samples(seed).items():
        s = scores([img for _, img in samples])
        kinds[kind] = {"flagged": round(float((s > 1).mean()), 4),
                       "scores": {name: round(float(v), 3) for (name, _), v in zip(samples, s, strict=True)}}
    images, decoded = decoded_split(predictor, data, split)
    real = scores(decoded)
    variants = {name: round(float((scores(imgs) > 1).mean()), 4) for name, imgs in xray_variants(decoded, seed)}
    flagged_real = [p.name for p, s in zip(images.paths, real, strict=True) if s > 1]
    return {
        "model": predictor.card.name,
        "kinds_flagged": sum(k["flagged"] >= KIND_FLAGGED for k in kinds.values()),
        "n_kinds": len(kinds),
        "kinds": kinds,
        "xray": {"data": str(data), "split": split, "n": len(real), "flagged": round(float((real > 1).mean()), 4),
                 "flagged_files": flagged_real, "score_median": round(float(np.median(real)), 3),
                 "score_p99": round(float(np.quantile(real, 0.99)), 3)},
        "xray_as_journal_figure": {"n": len(real), "flagged": variants["journal_figure"]},
        "xray_variants": {"n": len(real), "flagged": variants,
                          "worst": max(variants, key=variants.get) if variants else None},
    }


def main() -> None:
    from bench.common import model_on_split

    predictor, args = model_on_split(__doc__.splitlines()[0])
    print(json.dumps(ood_report(predictor, args.data, args.split), indent=2))


if __name__ == "__main__":
    main()
