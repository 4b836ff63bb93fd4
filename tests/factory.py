"""Synthetic chest-X-ray-like images in every supported encoding, made on the fly (no downloads).

Like MONAI's create_test_image_2d: a dark background, a bright body, two darker lung fields,
so that geometry (orientation, crop) and intensity mapping (inversion, windowing) are testable.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def phantom(height: int = 200, width: int = 160) -> np.ndarray:
    """(H, W) uint8: body ellipse, two lungs, and a bright marker in the top-left corner."""
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height / 2, width / 2
    img = np.full((height, width), 20.0)
    body = ((yy - cy) / (0.45 * height)) ** 2 + ((xx - cx) / (0.45 * width)) ** 2 <= 1
    img[body] = 180
    for side in (-1, 1):
        lung = ((yy - cy) / (0.3 * height)) ** 2 + ((xx - cx - side * 0.2 * width) / (0.13 * width)) ** 2 <= 1
        img[lung] = 70 + 30 * (yy[lung] / height)
    img[: height // 10, : width // 10] = 255  # orientation marker
    return img.astype(np.uint8)


def png_bytes(img: np.ndarray, mode: str = "L") -> bytes:
    """Encode `img` (uint8 gray) as a PNG of `mode`: L, LA, RGB, RGBA, P or I;16."""
    if mode == "I;16":
        pil = Image.fromarray(img.astype(np.uint16) * 257)
    elif mode == "P":
        pil = Image.fromarray(img).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    else:
        pil = Image.fromarray(img).convert(mode)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(img: np.ndarray, mode: str = "L", progressive: bool = False, orientation: int | None = None,
               quality: int = 95) -> bytes:
    pil = Image.fromarray(img).convert(mode)
    kwargs = {"quality": quality, "progressive": progressive}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 16, slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None, pixel_data: bool = True,
                patient_name: str = "Doe^Jane", stored: int | None = None) -> bytes:
    """A minimal valid DX DICOM file written with pydicom (`stored` bits of `bits` allocated)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient_name
    ds.PatientID = "123456"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        dtype = np.uint16 if bits == 16 else np.uint8
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def cr_film(gray: np.ndarray) -> bytes:
    """An 8-bit grey X-ray as a CR stores it: 12 bits stored in 16, MONOCHROME1 (low values white)."""
    return dicom_bytes(4095 - np.asarray(gray, np.uint16) * 16, photometric="MONOCHROME1", stored=12)


def claiming_42_bit_samples(jpeg_lossless_dicom: bytes) -> bytes:
    """The file with its JPEG Lossless frame header (marker, 2 length bytes, sample precision) saying
    42-bit samples: one byte on which GDCM's decoder segfaults."""
    precision = jpeg_lossless_dicom.index(b"\xff\xc3") + 4
    return jpeg_lossless_dicom[:precision] + bytes([42]) + jpeg_lossless_dicom[precision + 1:]


def compressed_dicom(data: bytes, syntax: str) -> bytes:
    """`data` (a DICOM file) re-encoded by GDCM, a real codec, to `syntax`: a gdcm.TransferSyntax name
    such as "JPEGLosslessProcess14_1" (JPEG Lossless SV1, the usual PACS export of a radiograph)."""
    import tempfile

    import gdcm

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        src.write_bytes(data)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
        change.SetInput(reader.GetImage())
        assert change.Change(), syntax
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        return dst.read_bytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming width x height, with a tiny (bogus) IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bomb_png(side: int = 20000) -> bytes:
    """A 1-bit side x side all-black PNG: tiny on disk (~50 KB), huge when decoded."""
    raw_row = b"\0" + b"\0" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(raw_row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def shipped_path() -> Path:
    """Folder of the shipped default model (models/DEFAULT names it)."""
    repo = Path(__file__).resolve().parent.parent
    return repo / "models" / (repo / "models" / "DEFAULT").read_text().strip()
