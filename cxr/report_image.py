"""A one-page PNG report of one prediction: image, overlay, probabilities, model, disclaimer."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxr.pipeline import Analysis
from cxr.saliency import overlay

DISCLAIMER = "Research demo, not a medical device. Not for diagnosis or treatment decisions."
_WIDTH, _PANEL = 1000, 440


def _font(size: int):
    return ImageFont.load_default(size=size)


def headline(analysis: Analysis, covid_threshold: float) -> tuple[str, str]:
    """The report's verdict and the line beside it, deciding as the Predict page does: no diagnosis for
    an image the out-of-distribution gate flags."""
    if analysis.ood:
        return ("No diagnosis: not like the chest X-rays the model was trained on",
                f"out-of-distribution score {analysis.ood_score:.2f} (above 1.00 is flagged); "
                "the bars below are the model's raw output, not meaningful for it")
    covid = analysis.probability("COVID19")
    if np.isnan(covid):
        return f"Predicted class: {analysis.label}", ""
    call = "above" if covid >= covid_threshold else "below"
    return (f"Predicted class: {analysis.label}",
            f"P(COVID-19) {covid:.1%} is {call} the threshold {covid_threshold:.2f}")


def render_report(analysis: Analysis, heatmap: np.ndarray, *, file_name: str, model_name: str,
                  method_label: str, explained_class: str, covid_threshold: float,
                  opacity: float = 0.45, notes: Sequence[str] = ()) -> bytes:
    """PNG bytes of a report page (1000 px wide, white background). `notes`: caveats the Predict page
    showed beside the result (a small upload's), printed under the probabilities."""
    lines = [line for note in notes for line in textwrap.wrap(note, 118)]
    page = Image.new("RGB", (_WIDTH, 900 + 20 * len(lines) + (10 if lines else 0)), "white")
    draw = ImageDraw.Draw(page)
    draw.text((40, 25), "Chest X-ray analysis", fill="black", font=_font(30))
    draw.text((40, 65), f"File: {file_name}    Model: {model_name}    "
              f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", fill="#444", font=_font(16))

    original = Image.fromarray(analysis.prepared).convert("RGB").resize((_PANEL, _PANEL))
    heat = Image.fromarray(overlay(analysis.prepared, heatmap, opacity)).resize((_PANEL, _PANEL))
    page.paste(original, (40, 110))
    page.paste(heat, (_WIDTH - 40 - _PANEL, 110))
    draw.text((40, 555), "Input as seen by the model", fill="#444", font=_font(15))
    draw.text((_WIDTH - 40 - _PANEL, 555), f"{method_label} for {explained_class}", fill="#444", font=_font(15))

    y = 600
    verdict, beside = headline(analysis, covid_threshold)
    if analysis.ood:  # too long to share a line: the reason goes under it
        draw.text((40, y - 8), verdict, fill="#a00", font=_font(20))
        draw.text((40, y + 18), beside, fill="#444", font=_font(14))
    else:
        draw.text((40, y), verdict, fill="black", font=_font(22))
        draw.text((520, y + 4), beside, fill="#444", font=_font(15))
    for i, (name, p) in enumerate(zip(analysis.classes, analysis.probs)):
        top = y + 45 + i * 38
        draw.text((40, top + 4), name, fill="black", font=_font(17))
        draw.rectangle((200, top, 200 + 600, top + 26), outline="#999")
        draw.rectangle((200, top, 200 + int(600 * float(p)), top + 26), fill="#3b6fb6")
        draw.text((815, top + 4), f"{float(p):.1%}", fill="black", font=_font(17))
    for i, line in enumerate(lines):
        draw.text((40, 775 + 20 * i), line, fill="#8a5a00", font=_font(14))
    draw.text((40, page.height - 50), DISCLAIMER, fill="#a00", font=_font(16))
    buf = io.BytesIO()
    page.save(buf, format="PNG")
    return buf.getvalue()
