import io

import numpy as np
import pytest

from cxr.decode import MIN_SIDE, decode_image, sniff_format, stretch_to_uint8
from cxr.errors import CxrError, InvalidImageError
from tests import factory

IMG = factory.phantom(200, 160)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16"])
def test_decode_png_modes_give_the_same_gray_image(mode):
    out = decode_image(factory.png_bytes(IMG, mode))
    assert out.dtype == np.uint8 and out.shape == IMG.shape
    # 16-bit data is stretched by its own min..max (its bit depth says nothing of its range).
    expected = stretch_to_uint8(IMG) if mode == "I;16" else IMG
    # The palette quantises: allow a few grey levels there.
    assert np.abs(out.astype(int) - expected).max() <= (8 if mode == "P" else 1)


def test_decode_16bit_png_stretches_its_own_range():
    raw = (IMG.astype(np.uint16) * 16)  # 12-bit data stored in a 16-bit PNG
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("mode,progressive", [("L", False), ("RGB", False), ("RGB", True), ("CMYK", False)])
def test_decode_jpeg_variants(mode, progressive):
    out = decode_image(factory.jpeg_bytes(IMG, mode, progressive))
    assert out.shape == IMG.shape
    assert np.abs(out.astype(float) - IMG).mean() < 4


def test_decode_jpeg_applies_exif_orientation():
    out = decode_image(factory.jpeg_bytes(IMG, orientation=6))  # stored rotated 90 degrees
    assert out.shape == (IMG.shape[1], IMG.shape[0])
    # Orientation 6 = rotate 90 clockwise to display: the top-left marker moves to the top-right.
    assert out[:10, -10:].mean() > 200 and out[:10, :10].mean() < 100


def test_decode_dicom_monochrome2_matches_16bit_png():
    out = decode_image(factory.dicom_bytes(IMG.astype(np.uint16) * 4))
    assert np.abs(out.astype(int) - decode_image(factory.png_bytes(IMG, "I;16"))).max() <= 1


def test_decode_dicom_monochrome1_is_inverted():
    out = decode_image(factory.dicom_bytes(255 - IMG, photometric="MONOCHROME1", bits=8))
    ref = decode_image(factory.dicom_bytes(IMG, photometric="MONOCHROME2", bits=8))
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_decode_dicom_applies_rescale_and_window():
    # Raw 0..1000 with slope 2: HU-like 0..2000. A window over the lower half saturates the body.
    raw = (IMG.astype(np.float64) / 255 * 1000).astype(np.uint16)
    full = decode_image(factory.dicom_bytes(raw, slope=2.0, intercept=0.0))
    windowed = decode_image(factory.dicom_bytes(raw, slope=2.0, intercept=0.0, window=(500, 1000)))
    body = IMG == 180
    assert windowed[body].mean() == 255  # above the window: white
    assert full[body].mean() < 250


def cr_dicom(mini_data) -> tuple[bytes, np.ndarray]:
    """A real X-ray from the data set as a CR-style DICOM, and its 12-bit stored grey levels."""
    from PIL import Image

    path = sorted((mini_data / "test" / "COVID19").glob("*"))[0]
    gray = np.asarray(Image.open(path).convert("L"))
    return factory.cr_film(gray), gray.astype(np.uint16) * 16


# What PACS exports of radiographs use; GDCM (a real codec) writes them here, python-gdcm reads them.
LOSSLESS = ["JPEGLosslessProcess14_1", "JPEGLosslessProcess14", "JPEGLSLossless", "JPEG2000Lossless",
            "RLELossless"]


@pytest.mark.parametrize("syntax", LOSSLESS)
def test_decode_compressed_dicom_gives_the_uncompressed_pixels(mini_data, syntax):
    import pydicom

    plain, gray = cr_dicom(mini_data)
    packed = factory.compressed_dicom(plain, syntax)
    meta = pydicom.dcmread(io.BytesIO(packed), stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID.is_compressed and len(packed) < len(plain)
    out = decode_image(packed)
    assert np.array_equal(out, decode_image(plain))  # lossless: the very same image
    assert np.array_equal(out, stretch_to_uint8(gray))  # and MONOCHROME1 still shown as a radiograph


def test_decode_unreadable_dicom_compression_is_named_with_the_way_out(mini_data):
    # 12-bit lossy JPEG: GDCM writes it, but pydicom's GDCM plugin does not read it back.
    packed = factory.compressed_dicom(cr_dicom(mini_data)[0], "JPEGExtendedProcess2_4")
    with pytest.raises(InvalidImageError, match=r"JPEG Extended.*Export it uncompressed") as info:
        decode_image(packed)
    assert "plugin" not in str(info.value)


def test_decode_damaged_compressed_dicom_is_a_clear_error(mini_data):
    packed = factory.compressed_dicom(cr_dicom(mini_data)[0], "JPEGLosslessProcess14_1")
    start = packed.index(b"\xff\xd8")  # the JPEG stream inside the pixel data
    damaged = packed[:start] + bytes(64) + packed[start + 64:]
    with pytest.raises(InvalidImageError, match="JPEG Lossless.*could not be decoded"):
        decode_image(damaged)


def test_a_codec_crash_on_a_damaged_dicom_is_a_clear_error_not_a_dead_process(mini_data):
    import subprocess
    import sys

    packed = factory.compressed_dicom(cr_dicom(mini_data)[0], "JPEGLosslessProcess14_1")
    bad = factory.claiming_42_bit_samples(packed)
    # Decoded in-process, GDCM dies on this file (a segfault): why cxr decodes it in another process.
    bare = "import io, sys, pydicom; pydicom.dcmread(io.BytesIO(sys.stdin.buffer.read())).pixel_array"
    assert subprocess.run([sys.executable, "-c", bare], input=bad, capture_output=True).returncode < 0
    with pytest.raises(InvalidImageError, match="could not be decoded: the file may be damaged"):
        decode_image(bad)
    assert np.array_equal(decode_image(packed), decode_image(cr_dicom(mini_data)[0]))  # a new worker


def test_a_hung_dicom_decoder_is_stopped_and_the_next_file_gets_a_new_one(mini_data, monkeypatch):
    from cxr import dicom_isolation

    plain = cr_dicom(mini_data)[0]
    packed = factory.compressed_dicom(plain, "JPEGLSLossless")
    with monkeypatch.context() as patch:
        patch.setattr(dicom_isolation, "TIMEOUT_S", 0.01)  # far less than starting Python takes
        dicom_isolation._stop_at_exit()  # so this request has to start one
        with pytest.raises(InvalidImageError, match="JPEG-LS.*could not be decoded"):
            decode_image(packed)
    assert np.array_equal(decode_image(packed), decode_image(plain))


def test_one_dicom_worker_serves_file_after_file(mini_data):
    from cxr import dicom_isolation

    plain = cr_dicom(mini_data)[0]
    packed = factory.compressed_dicom(plain, "JPEGLosslessProcess14_1")
    decode_image(packed)
    worker = dicom_isolation._worker
    for _ in range(3):
        assert np.array_equal(decode_image(packed), decode_image(plain))
    assert dicom_isolation._worker is worker and worker.poll() is None


def test_decode_multiframe_compressed_dicom_takes_the_first_frame():
    # A real two-frame RLE file from pydicom's own test data (bundled, no download).
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.pixels import pixel_array

    path = get_testdata_file("SC_rgb_rle_2frame.dcm")
    frames = pixel_array(path)
    assert frames.shape[0] == 2 and not np.array_equal(frames[0], frames[1])
    assert np.array_equal(decode_image(path), np.asarray(Image.fromarray(frames[0]).convert("L")))


def test_decode_dicom_without_preamble_recognised_by_extension(tmp_path):
    data = factory.dicom_bytes(IMG, bits=8)
    path = tmp_path / "scan.dcm"
    path.write_bytes(data[132:])  # drop preamble + DICM magic: pydicom needs force
    assert sniff_format(path.read_bytes(), path.name) == "dicom"


@pytest.mark.parametrize(
    "data,words",
    [
        (b"", "empty"),
        (b"hello, this is text", "not a PNG, JPEG or DICOM"),
        (b"<html><body>x</body></html>", "not a PNG, JPEG or DICOM"),
        (b"PK\x03\x04" + b"\0" * 100, "not a PNG, JPEG or DICOM"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a PNG, JPEG or DICOM"),
        (b"GIF89a" + b"\0" * 100, "not a PNG, JPEG or DICOM"),
    ],
)
def test_decode_rejects_non_images(data, words):
    with pytest.raises(InvalidImageError, match=words):
        decode_image(data)


def test_decode_rejects_truncated_png():
    data = factory.png_bytes(IMG)
    with pytest.raises(InvalidImageError, match="damaged or incomplete"):
        decode_image(data[: len(data) // 2])


def test_decode_rejects_truncated_jpeg():
    data = factory.jpeg_bytes(IMG)
    with pytest.raises(InvalidImageError, match="damaged or incomplete"):
        decode_image(data[: len(data) // 2])


def test_decode_rejects_tiny_image():
    with pytest.raises(InvalidImageError, match="too small"):
        decode_image(factory.png_bytes(np.zeros((MIN_SIDE - 1, 300), np.uint8)))


def test_decode_rejects_header_claiming_60000_squared_without_decoding():
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(factory.png_header_only(60000, 60000))


def test_decode_rejects_decompression_bomb():
    bomb = factory.bomb_png(20000)
    assert len(bomb) < 200_000
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(bomb)


def test_decode_rejects_dicom_without_pixel_data():
    with pytest.raises(InvalidImageError, match="no pixel data"):
        decode_image(factory.dicom_bytes(IMG, pixel_data=False))


def test_decode_rejects_garbage_after_dicm_preamble():
    with pytest.raises(InvalidImageError, match="DICOM"):
        decode_image(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)


def test_decode_reports_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        decode_image(tmp_path / "nope.png")


def test_decode_real_dataset_files(mini_data):
    files = sorted((mini_data / "train").glob("*/*.jpg"))
    assert len(files) == 24
    for path in files:
        img = decode_image(path)
        assert img.dtype == np.uint8 and img.ndim == 2 and min(img.shape) >= MIN_SIDE


def test_invalid_image_error_is_a_cxr_error():
    assert issubclass(InvalidImageError, CxrError) and issubclass(InvalidImageError, ValueError)


def test_dicom_patient_data_never_reaches_logs_or_warnings(caplog, recwarn):
    import logging

    caplog.set_level(logging.DEBUG)
    data = factory.dicom_bytes(IMG, bits=8, patient_name="Secretname^Patient")
    decode_image(data)
    # A damaged file whose errors would quote element values.
    broken = data.replace(b"Secretname^Patient", b"Secretname^Pat\xff\xfe\x00\x01")
    try:
        decode_image(broken[: len(broken) - 500])
    except InvalidImageError as exc:
        assert "Secretname" not in str(exc)
    assert "Secretname" not in caplog.text
    assert not any("Secretname" in str(w.message) for w in recwarn)
