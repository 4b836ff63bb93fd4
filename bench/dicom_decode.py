"""What decoding a compressed DICOM costs, against the same pixels uncompressed; prints JSON.

    python bench/dicom_decode.py [--repeats 15] [--side 2500] [--data $CXR_DATA_ROOT/cxr-data]

A real test X-ray is upscaled to a CR-sized film (--side px tall), stored as 12-bit MONOCHROME1
and re-encoded by GDCM to each lossless compression PACS exports use. Compressed pixel data is
decoded in a long-lived separate process (cxr.dicom_worker), so each figure includes the trip
there and back; `codec_in_process_ms_median` is the codec alone, unguarded. Medians over --repeats
after one warm-up (which starts the worker, ~1 s); these machines are shared and noisy, so read
the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_json_flag  # noqa: E402
from cxr import dicom_worker  # noqa: E402
from cxr.config import get_paths  # noqa: E402
from cxr.decode import decode_image  # noqa: E402
from tests.factory import compressed_dicom, cr_film  # noqa: E402  (GDCM as the encoder)

SYNTAXES = ["RLELossless", "JPEGLosslessProcess14_1", "JPEGLSLossless", "JPEG2000Lossless"]


def median_ms(decode, data: bytes, repeats: int) -> float:
    decode(data)  # warm-up: imports, the worker's start, page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode(data)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--side", type=int, default=2500)
    parser.add_argument("--data", type=Path, default=get_paths().data_root / "cxr-data")
    add_json_flag(parser)
    args = parser.parse_args()

    source = sorted((args.data / "test" / "COVID19").glob("*"))[0]
    img = Image.open(source).convert("L")
    width = round(img.width * args.side / img.height)
    plain = cr_film(np.asarray(img.resize((width, args.side), Image.BICUBIC)))
    reference = decode_image(plain)
    uncompressed_ms = median_ms(decode_image, plain, args.repeats)
    result = {"image": source.name, "pixels": [width, args.side], "repeats": args.repeats,
              "uncompressed": {"mb": round(len(plain) / 2**20, 2), "decode_ms_median": uncompressed_ms}}
    for syntax in SYNTAXES:
        packed = compressed_dicom(plain, syntax)
        assert np.array_equal(decode_image(packed), reference), syntax  # lossless, so the same image
        ms = median_ms(decode_image, packed, args.repeats)
        result[syntax] = {"mb": round(len(packed) / 2**20, 2), "decode_ms_median": ms,
                          "ratio_to_uncompressed": round(ms / uncompressed_ms, 1),
                          # The codec alone, unguarded in this process: what the isolation adds to it.
                          "codec_in_process_ms_median": median_ms(dicom_worker.first_frame, packed, args.repeats)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
