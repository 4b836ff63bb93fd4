"""A corpus of bad files through the real CLI: each is rejected with a message, in bounded
memory and time, and never stops the good files beside it."""

import json
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from tests import factory

REPO = Path(__file__).resolve().parent.parent
IMG = factory.phantom(200, 160)


def bad_corpus(folder: Path) -> dict[str, bytes]:
    png = factory.png_bytes(IMG)
    jpeg = factory.jpeg_bytes(IMG)
    zip_path = folder / "archive.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("a.txt", "hello")
    return {
        "empty.png": b"",
        "text.jpg": b"just some text, not an image\n",
        "page.png": b"<!doctype html><html><body>hi</body></html>",
        "archive.png": zip_path.read_bytes(),
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "header_60000.png": factory.png_header_only(60000, 60000),
        "bomb.png": factory.bomb_png(20000),
        "vector.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "one_pixel.png": factory.png_bytes(np.zeros((1, 1), np.uint8)),
        "tiny.png": factory.png_bytes(np.zeros((20, 20), np.uint8)),
        "no_pixels.dcm": factory.dicom_bytes(IMG, pixel_data=False),
        "garbage.dcm": b"\0" * 128 + b"DICM" + bytes(range(256)) * 8,
    }


def test_every_bad_file_is_rejected_with_a_message_in_bounded_memory_and_time(tmp_path, tiny_model):
    paths = []
    for name, data in bad_corpus(tmp_path).items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    good = tmp_path / "good.png"
    good.write_bytes(factory.png_bytes(IMG))
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "cxr", "predict", *paths, good, "--model", tiny_model, "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    results = json.loads(out.stdout)
    assert [r["file"] for r in results] == [str(p) for p in paths + [good]]
    for r in results[:-1]:
        assert r.get("error"), r
        assert "label" not in r
    assert results[-1]["label"] in ("COVID19", "NORMAL", "PNEUMONIA")
    # A 20000x20000 bomb decoded would need 400 MB for one 8-bit copy; TensorFlow itself is ~1 GB.
    assert seconds < 120 and peak_mb < 2500, (seconds, peak_mb)
