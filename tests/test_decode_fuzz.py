"""Property-based fuzzing of the decoder: whatever the bytes, only InvalidImageError escapes."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr.decode import decode_image
from cxr.errors import InvalidImageError
from tests import factory

IMG = factory.phantom(96, 80)
SEEDS = {
    "png": factory.png_bytes(IMG),
    "png16": factory.png_bytes(IMG, "I;16"),
    "jpeg": factory.jpeg_bytes(IMG),
    "jpeg_progressive": factory.jpeg_bytes(IMG, "RGB", progressive=True),
    "dicom": factory.dicom_bytes(IMG, bits=8),
}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_reject(data: bytes, name: str = "") -> None:
    try:
        img = decode_image(data, name=name)
    except InvalidImageError as exc:
        assert str(exc)  # a message for the user, never empty
        return
    assert img.dtype == np.uint8 and img.ndim == 2


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from(["", "x.png", "x.jpg", "x.dcm"]))
def test_random_bytes_only_raise_invalid_image_error(data, name):
    decode_or_reject(data, name)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_mutated_real_files_only_raise_invalid_image_error(kind, data):
    blob = bytearray(SEEDS[kind])
    for _ in range(data.draw(st.integers(1, 8))):
        action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        pos = data.draw(st.integers(0, len(blob) - 1))
        if action == "flip":
            blob[pos] = data.draw(st.integers(0, 255))
        elif action == "truncate":
            del blob[max(pos, 1):]
        else:
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    decode_or_reject(bytes(blob), "scan.dcm" if kind == "dicom" else "")


# Compressed DICOM goes to GDCM's C++ codecs in a separate process: fewer, slower examples.
PACKED = factory.compressed_dicom(factory.dicom_bytes(IMG.astype(np.uint16) * 16, stored=12),
                                  "JPEGLosslessProcess14_1")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_compressed_dicom_only_raises_invalid_image_error(data):
    blob = bytearray(PACKED)
    start = PACKED.index(b"\xff\xd8")  # the JPEG stream: what the codec parses
    for _ in range(data.draw(st.integers(1, 12))):
        blob[data.draw(st.integers(start, len(blob) - 1))] = data.draw(st.integers(0, 255))
    decode_or_reject(bytes(blob[: data.draw(st.integers(start, len(blob)))]))
