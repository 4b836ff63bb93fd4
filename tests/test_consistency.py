"""The shipped model gives the same answer for the same X-ray in every supported encoding."""

from pathlib import Path

import numpy as np
import pytest

from cxr.decode import decode_image
from cxr.predict import Predictor
from tests import factory

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped():
    return Predictor.from_path(factory.shipped_path())


def encodings(img: np.ndarray) -> dict[str, bytes]:
    return {
        "png": factory.png_bytes(img),
        "jpeg_rgb_q95": factory.jpeg_bytes(img, "RGB", quality=95),
        "jpeg_progressive": factory.jpeg_bytes(img, "RGB", progressive=True, quality=95),
        "png_16bit": factory.png_bytes(img, "I;16"),
        "png_rgba": factory.png_bytes(img, "RGBA"),
        "dicom_mono2": factory.dicom_bytes(img.astype(np.uint16) * 16),
        "dicom_mono1_inverted": factory.dicom_bytes(4095 - img.astype(np.uint16) * 16, photometric="MONOCHROME1"),
    }


@pytest.mark.parametrize("label", ["NORMAL", "PNEUMONIA", "COVID19"])
def test_same_xray_in_every_encoding_gets_the_same_probabilities(shipped, full_data, label):
    path = sorted((full_data / "test" / label).glob("*.jpg"))[0]
    img = decode_image(path)
    reference = shipped.predict_proba([img])[0]
    for name, data in encodings(img).items():
        probs = shipped.predict_proba([decode_image(data)])[0]
        assert np.abs(probs - reference).max() <= 0.02, (name, probs, reference)


def test_very_large_and_small_valid_images_are_predicted(shipped, full_data):
    img = decode_image(sorted((full_data / "test" / "NORMAL").glob("*.jpg"))[0])
    from PIL import Image

    for side in (3000, 160):
        resized = np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BILINEAR))
        probs = shipped.predict_proba([decode_image(factory.png_bytes(resized))])[0]
        assert probs.shape == (3,) and np.isclose(probs.sum(), 1)
