"""Bytes or a path -> an 8-bit grayscale image (numpy uint8, shape (H, W)).

Accepts PNG (8/16-bit; L, LA, RGB, RGBA, P, I;16), JPEG (RGB, CMYK, progressive; EXIF
orientation applied) and DICOM (pydicom: rescale slope/intercept, VOI LUT or window,
MONOCHROME1 inverted; uncompressed, or RLE, JPEG Baseline, JPEG Lossless, JPEG-LS or JPEG 2000
compressed, through python-gdcm). Compressed pixel data is decoded in a process of its own: the C++
codecs can crash on a damaged file, and the app's server must not (`cxr.dicom_isolation`).
Anything else raises InvalidImageError with a message a clinician can act on. Pixel counts are
checked from the header *before* pixels are decoded, so a decompression bomb costs neither memory
nor time.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cxr import dicom_isolation
from cxr.errors import InvalidImageError

MIN_SIDE = 64  # px; smaller images cannot show lung detail at model resolution
MAX_PIXELS = 50_000_000  # ~7000 x 7000; larger than any plain radiograph
MAX_BYTES = 64 * 1024 * 1024  # an X-ray file is at most tens of MB

ACCEPTED = "PNG, JPEG or DICOM"


def sniff_format(data: bytes, name: str = "") -> str:
    """Return 'png', 'jpeg' or 'dicom' from the magic bytes (and a .dcm name), else raise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom")):
        return "dicom"
    raise InvalidImageError(f"This file is not a {ACCEPTED} image.")


def read_bytes(src: bytes | str | Path) -> tuple[bytes, str]:
    """Return (bytes, name) from bytes or a path, refusing empty and oversized files."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, name = bytes(src), ""
    else:
        path = Path(src)
        try:
            if path.stat().st_size > MAX_BYTES:
                raise InvalidImageError(_too_big_message())
            data, name = path.read_bytes(), path.name
        except FileNotFoundError:
            raise InvalidImageError(f"File not found: {path.name}") from None
        except IsADirectoryError:
            raise InvalidImageError(f"{path.name} is a folder, not an image file.") from None
        except OSError as exc:
            raise InvalidImageError(f"Could not read {path.name}: {exc.strerror}.") from None
    if not data:
        raise InvalidImageError("The file is empty.")
    if len(data) > MAX_BYTES:
        raise InvalidImageError(_too_big_message())
    return data, name


def decode_image(src: bytes | str | Path, name: str = "") -> np.ndarray:
    """Decode `src` (bytes or path) into a uint8 grayscale array of shape (H, W).

    `name` is only used to recognise a DICOM file without the standard 128-byte preamble.
    """
    data, file_name = read_bytes(src)
    fmt = sniff_format(data, name or file_name)
    img = _decode_dicom(data) if fmt == "dicom" else _decode_pillow(data, fmt)
    height, width = img.shape
    if min(height, width) < MIN_SIDE:
        raise InvalidImageError(
            f"The image is too small ({width}x{height} px); at least {MIN_SIDE} px on each side "
            "is needed to see the lungs."
        )
    return img


def _too_big_message() -> str:
    return f"The file is larger than {MAX_BYTES // 2**20} MB, more than any chest X-ray needs."


def _check_pixels(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImageError("The image has no pixels.")
    if width * height > MAX_PIXELS:
        raise InvalidImageError(
            f"The image is {width}x{height} px, too large to be a radiograph "
            f"(limit {MAX_PIXELS // 1_000_000} megapixels)."
        )


def _decode_pillow(data: bytes, fmt: str) -> np.ndarray:
    label = fmt.upper()
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between MAX_IMAGE_PIXELS and 2x that; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[label]) as pil:
                _check_pixels(*pil.size)
                pil.load()
                pil = ImageOps.exif_transpose(pil)
                return _pil_to_gray(pil)
    except InvalidImageError:
        raise
    except Image.DecompressionBombError:
        raise InvalidImageError("The image is too large to be a radiograph.") from None
    except Exception as exc:  # noqa: BLE001 - Pillow signals corrupt data with OSError, SyntaxError, struct.error...
        raise InvalidImageError(
            f"The {label} file is damaged or incomplete and cannot be read ({_short(exc)})."
        ) from None


def _pil_to_gray(pil: Image.Image) -> np.ndarray:
    if pil.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return stretch_to_uint8(np.asarray(pil, dtype=np.float64))
    if pil.mode == "P":
        pil = pil.convert("RGBA")
    if pil.mode in ("LA", "RGBA", "PA"):
        # Composite on black, as the training data was prepared.
        rgba = pil.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        pil = Image.alpha_composite(black, rgba)
    return np.asarray(pil.convert("L"), dtype=np.uint8).copy()


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Linearly map an array's own min..max to 0..255 (used for >8-bit data)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InvalidImageError("The image contains invalid (non-finite) pixel values.")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _decode_dicom(data: bytes) -> np.ndarray:
    # pydicom warns and logs about malformed elements, quoting their values: those can be patient
    # data, which must never reach a log.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_dicom_pixels(data)


def _read_dicom_pixels(data: bytes) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except Exception as exc:  # noqa: BLE001 - on damaged files pydicom raises struct.error, KeyError, ...
        raise InvalidImageError(f"The DICOM file is damaged and cannot be read ({_short(exc)}).") from None
    if "PixelData" not in ds:
        raise InvalidImageError("The DICOM file holds no image (no pixel data).")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        _check_pixels(cols, rows)
        pixels = _first_frame(ds, data)
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") or pixels.ndim == 3:
            rgb = pixels.astype(np.uint8) if pixels.dtype == np.uint8 else stretch_to_uint8(pixels)
            return np.asarray(Image.fromarray(rgb[..., :3]).convert("L"))
        values = apply_modality_lut(pixels, ds)
        values = apply_voi_lut(values, ds)
    except InvalidImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom's pixel handlers raise many types
        raise InvalidImageError(_undecodable_message(ds, exc)) from None
    if values.ndim != 2:
        raise InvalidImageError("The DICOM image is not a single 2-D picture.")
    img = stretch_to_uint8(values)
    if photometric == "MONOCHROME1":
        img = 255 - img  # MONOCHROME1 shows low values as white
    return img


def _compression(ds):
    """The transfer syntax UID if the pixel data is compressed, else None."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return syntax if syntax is not None and syntax.is_compressed else None


def _first_frame(ds, data: bytes) -> np.ndarray:
    """The stored values of the first frame; compressed ones are decoded in a separate process."""
    if _compression(ds):
        return dicom_isolation.first_frame(data)
    from pydicom.pixels import pixel_array

    return pixel_array(ds, index=0)  # a radiograph is one frame; take the first of a series


def _undecodable_message(ds, exc: BaseException) -> str:
    syntax = _compression(ds)
    if syntax:
        # pydicom's own text lists its plugins; name the compression and the way out instead.
        return (
            f"The DICOM image's compression ({syntax.name}) could not be decoded: the file may be damaged, "
            "or it uses a variant this app does not read (12-bit JPEG Extended is one). Export it "
            "uncompressed, or as JPEG Lossless or JPEG 2000, and try again."
        )
    return f"The DICOM pixel data cannot be decoded ({_short(exc)}); the file may be damaged."


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:120]
