"""The serving path the Predict page runs, and its one-page report."""

import io

import numpy as np
import pytest
from PIL import Image

from cxr.errors import InvalidImageError
from cxr.pipeline import Analysis, analyze, boxed_png, explain, overlay_png
from cxr.predict import Predictor
from cxr.report_image import DISCLAIMER, render_report
from cxr.saliency import Explainer
from tests import factory


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_path(tiny_model)


def test_analyze_explain_overlay_from_bytes(predictor):
    analysis = analyze(predictor, factory.jpeg_bytes(factory.phantom(300, 240)), "chest.jpg")
    assert analysis.img.shape == (300, 240) and analysis.prepared.shape == (96, 96)
    assert analysis.label in predictor.classes and np.isclose(analysis.probs.sum(), 1)
    assert analysis.probability("COVID19") == pytest.approx(float(analysis.probs[0]))
    heat = explain(Explainer(predictor.model, predictor.card.arch), analysis)
    png = overlay_png(analysis, heat, 0.5)
    with Image.open(io.BytesIO(png)) as pil:
        assert pil.size == (96, 96) and pil.mode == "RGB"


def test_boxed_png_outlines_a_box_that_leaves_the_upload():
    """A lung-square box may reach past the upload (black bars): its outline stays on the image."""
    img = np.zeros((100, 200), np.uint8)
    analysis = Analysis(img, img[:96, :96], np.array([1.0]), ["NORMAL"], box=(20, -50, 180, 150))
    with Image.open(io.BytesIO(boxed_png(analysis))) as pil:
        rgb = np.asarray(pil.convert("RGB"))
    yellow = (rgb[..., 0] > 200) & (rgb[..., 2] < 50)
    assert yellow[0, 20:180].all() and yellow[-1, 20:180].all()  # top and bottom edges drawn on the frame
    assert yellow[:, 20].all() and yellow[:, 179].all() and not yellow[50, 100]


def test_analyze_rejects_bad_bytes(predictor):
    with pytest.raises(InvalidImageError):
        analyze(predictor, b"not an image", "x.png")


def test_report_is_a_png_page(predictor):
    analysis = analyze(predictor, factory.png_bytes(factory.phantom(200, 200)))
    heat = np.zeros(analysis.prepared.shape, np.float32)
    png = render_report(analysis, heat, file_name="x.png", model_name="tiny", method_label="Grad-CAM",
                        explained_class="NORMAL", covid_threshold=0.4)
    with Image.open(io.BytesIO(png)) as pil:
        assert pil.format == "PNG" and pil.size == (1000, 900)
    assert DISCLAIMER.startswith("Research demo")


def test_report_gives_no_diagnosis_for_a_flagged_image_and_carries_the_pages_notes():
    from cxr.report_image import headline

    img = np.full((128, 128), 90, np.uint8)
    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    read = Analysis(img, img, np.array([0.3, 0.6, 0.1]), classes, ood_score=0.4)
    flagged = Analysis(img, img, np.array([0.3, 0.6, 0.1]), classes, ood_score=1.7)
    assert headline(read, 0.28) == ("Predicted class: NORMAL", "P(COVID-19) 30.0% is above the threshold 0.28")
    verdict, beside = headline(flagged, 0.28)
    # As the Predict page: no class named as the answer for an image the gate flags.
    assert verdict.startswith("No diagnosis") and "NORMAL" not in verdict and "score 1.70" in beside
    heat = np.zeros(img.shape, np.float32)
    common = dict(file_name="x.png", model_name="tiny", method_label="Grad-CAM", explained_class="NORMAL",
                  covid_threshold=0.28)
    note = "This X-ray is small: 128 px on its longest side. " * 6  # wraps onto three lines
    with Image.open(io.BytesIO(render_report(read, heat, notes=[note], **common))) as pil:
        assert pil.size == (1000, 900 + 3 * 20 + 10)
        rows = np.asarray(pil.convert("RGB"))[775:835, 40:960]
        assert (rows.min(axis=2) < 200).any()  # the note is drawn where the page grew
    with Image.open(io.BytesIO(render_report(flagged, heat, **common))) as pil:
        assert pil.size == (1000, 900)


def test_result_row_gives_a_flagged_image_no_call_and_carries_size_and_the_small_image_flag():
    from cxr.pipeline import result_row

    img = np.full((250, 200), 90, np.uint8)
    classes = ["COVID19", "NORMAL", "PNEUMONIA"]
    read = Analysis(img, img[:128, :128], np.array([0.3, 0.6, 0.1]), classes, ood_score=0.4)
    flagged = Analysis(img, img[:128, :128], np.array([0.3, 0.6, 0.1]), classes, ood_score=1.7)
    row = result_row("a.png", read, 0.28, small_image_note="This X-ray is small: 250 px ...")
    assert row == {"file": "a.png", "label": "NORMAL", "p_COVID19": 0.3, "p_NORMAL": 0.6, "p_PNEUMONIA": 0.1,
                   "covid_positive": True, "ood": False, "ood_score": 0.4, "longest_side_px": 250,
                   "small_image": True}
    assert result_row("a.png", read, 0.31)["covid_positive"] is False
    row = result_row("b.png", flagged, 0.28)
    assert row["label"] == "" and row["covid_positive"] == "" and row["ood"] is True and row["small_image"] is False
