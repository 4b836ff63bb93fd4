"""The serving path a page (and the latency bench) runs: bytes -> probabilities + saliency.

Keeping it here means the app, the CLI and the benchmarks time and test the same calls.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxr.decode import decode_image
from cxr.predict import Predictor
from cxr.preprocess import to_model_input
from cxr.saliency import Explainer, overlay


@dataclass(frozen=True)
class Analysis:
    img: np.ndarray  # (H, W) uint8 as decoded, for display
    prepared: np.ndarray  # (S, S) uint8 exactly as the model saw it
    probs: np.ndarray  # (C,) calibrated probabilities in the model's class order
    classes: list[str]
    ood_score: float | None = None  # > 1: unlike the X-rays the model was trained on
    # (left, top, right, bottom) of `img` that became `prepared`: the lung box under the "lungs" policy.
    box: tuple[int, int, int, int] | None = None

    @property
    def ood(self) -> bool:
        return self.ood_score is not None and self.ood_score > 1.0

    @property
    def label(self) -> str:
        return self.classes[int(np.argmax(self.probs))]

    def probability(self, name: str) -> float:
        return float(self.probs[self.classes.index(name)]) if name in self.classes else float("nan")


def analyze(predictor: Predictor, data: bytes, name: str = "") -> Analysis:
    """Decode and classify one upload; raises InvalidImageError for unusable files."""
    img = decode_image(data, name=name)
    # With test-time views (cxr.views) the probabilities average several crops; saliency explains view 0.
    views, box = predictor.view_stack(img)
    probs, features = predictor.infer(to_model_input(views[None]))
    prepared = views[0]
    scores = predictor.ood_scores(features)
    return Analysis(img, prepared, probs[0], predictor.classes, None if scores is None else float(scores[0]),
                    tuple(int(v) for v in box))


def result_row(name: str, analysis: Analysis, threshold: float, small_image_note: str | None = None) -> dict:
    """One upload's row of the results table a page offers as CSV.

    No label and no COVID-19 call for an image the OOD gate flags, as on the page. `small_image` says the
    page warned that this X-ray is smaller than the model reads COVID-19 reliably (cxr.resolution), so
    a batch's negatives can be told apart without opening each result.
    """
    covid = analysis.probability("COVID19")
    return {"file": name, "label": "" if analysis.ood else analysis.label,
            **{f"p_{c}": round(float(p), 4) for c, p in zip(analysis.classes, analysis.probs, strict=True)},
            "covid_positive": "" if np.isnan(covid) or analysis.ood else bool(covid >= threshold),
            "ood": analysis.ood, "ood_score": "" if analysis.ood_score is None else round(analysis.ood_score, 3),
            "longest_side_px": int(max(analysis.img.shape)), "small_image": small_image_note is not None}


def explain(explainer: Explainer, analysis: Analysis, class_index: int | None = None,
            method: str = "gradcam") -> np.ndarray:
    """(S, S) heatmap in 0..1 for `class_index` (default: the predicted class)."""
    if class_index is None:
        class_index = int(np.argmax(analysis.probs))
    return explainer.heatmap(to_model_input(analysis.prepared), class_index, method)


def png_bytes(rgb_or_grey: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb_or_grey).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def boxed_png(analysis: Analysis, max_side: int = 512) -> bytes:
    """The upload, shrunk for display, with the part the model saw outlined."""
    from PIL import ImageDraw

    pil = Image.fromarray(analysis.img).convert("RGB")
    scale = min(1.0, max_side / max(pil.size))
    pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))))
    if analysis.box is not None:
        # A lung-square box may reach past the upload (the model saw black there): outline what is on it.
        left, top = (max(0, round(v * scale)) for v in analysis.box[:2])
        right, bottom = min(pil.width, round(analysis.box[2] * scale)), min(pil.height, round(analysis.box[3] * scale))
        ImageDraw.Draw(pil).rectangle((left, top, right - 1, bottom - 1), outline=(255, 200, 0),
                                      width=max(2, round(max(pil.size) / 150)))
    return png_bytes(np.asarray(pil))


def overlay_png(analysis: Analysis, heatmap: np.ndarray, opacity: float = 0.45) -> bytes:
    return png_bytes(overlay(analysis.prepared, heatmap, opacity))
