"""End to end in a real browser: `streamlit run` on a free port, Debian's chromium via Playwright."""

import csv
import os
import time
from pathlib import Path

import numpy as np


def upload_and_wait(page, path: Path, expect_results: int = 1, timeout_ms: int = 120_000) -> float:
    """Add `path` to the uploader; seconds until `expect_results` predictions with overlays show."""
    start = time.perf_counter()
    page.locator("input[type=file]").first.set_input_files(str(path))
    for text in ("Predicted:", "Grad-CAM:"):
        page.get_by_text(text).nth(expect_results - 1).wait_for(timeout=timeout_ms)
    return time.perf_counter() - start


def test_upload_in_a_real_browser_shows_prediction_overlay_and_templates(server, browser, app_env, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server)
    page.get_by_text("Chest X-ray classification").wait_for(timeout=60_000)
    images = sorted((app_env["mini"] / "train" / "PNEUMONIA").glob("*.jpg"))
    upload_and_wait(page, images[0])
    heading = page.get_by_role("heading", name="Predicted:").first.inner_text()
    assert heading.split("Predicted:")[1].strip() in ("COVID19", "NORMAL", "PNEUMONIA")
    assert page.locator("[data-testid=stImage] img").count() >= 2  # model input + overlay
    assert page.locator(".js-plotly-plot").count() >= 1
    assert page.get_by_text("Exception").count() == 0 and page.get_by_text("Traceback").count() == 0
    shots = Path(os.environ.get("CXR_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "predict.png"), full_page=True)
    # A second upload joins the first; the warm model answers without reloading.
    seconds = upload_and_wait(page, images[1], expect_results=2)
    assert seconds < 30
    assert page.get_by_text(images[0].name).count() >= 1 and page.get_by_text(images[1].name).count() >= 1


def test_a_batch_in_a_real_browser_gets_a_table_a_csv_and_full_results_for_the_first_four(server, browser, app_env):
    mini = app_env["mini"] / "train"
    films = [f for c in ("NORMAL", "PNEUMONIA", "COVID19") for f in sorted((mini / c).glob("*.jpg"))[:2]]
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(server)
    page.get_by_text("Chest X-ray classification").wait_for(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files([str(f) for f in films])
    page.get_by_text("Grad-CAM:").nth(3).wait_for(timeout=180_000)
    page.get_by_text("the table above lists all 6").wait_for(timeout=30_000)
    # Full results (headline, overlay) for four; the other two are in the table and its CSV only.
    assert page.locator("[data-testid=stDataFrame]").count() == 1
    assert page.get_by_text("Grad-CAM:").count() == 4
    with page.expect_download() as download:
        page.get_by_text("Download all results (CSV)").click()
    rows = list(csv.DictReader(Path(download.value.path()).open()))
    assert [r["file"] for r in rows] == [f.name for f in films] and all(r["label"] for r in rows)
    assert page.get_by_text("Traceback").count() == 0


def test_bad_upload_shows_an_error_not_a_traceback(server, browser, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    page = browser.new_page()
    page.goto(server)
    page.get_by_text("Chest X-ray classification").wait_for(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(str(bad))
    page.get_by_text("scan.png cannot be analysed").wait_for(timeout=60_000)
    assert page.get_by_text("Traceback").count() == 0


def test_a_dicom_that_crashes_the_codec_leaves_the_server_serving(server, browser, app_env, tmp_path):
    # A PACS-style export (12-bit MONOCHROME1, JPEG Lossless, no extension) of a real X-ray, and the
    # same file with its frame header claiming 42-bit samples, on which GDCM segfaults.
    from PIL import Image

    from tests import factory

    xray = sorted((app_env["mini"] / "test" / "COVID19").glob("*"))[0]
    packed = factory.compressed_dicom(factory.cr_film(np.asarray(Image.open(xray).convert("L"))),
                                      "JPEGLosslessProcess14_1")
    (tmp_path / "IM0001").write_bytes(factory.claiming_42_bit_samples(packed))
    (tmp_path / "IM0002").write_bytes(packed)
    page = browser.new_page()
    page.goto(server)
    page.get_by_text("Chest X-ray classification").wait_for(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(str(tmp_path / "IM0001"))
    page.get_by_text("IM0001 cannot be analysed").wait_for(timeout=60_000)
    assert page.get_by_text("JPEG Lossless").count() >= 1
    upload_and_wait(page, tmp_path / "IM0002")  # the same server, a new decoder process
    assert page.get_by_text("Traceback").count() == 0
