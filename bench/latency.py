"""Serving latency through the same library calls the Predict page makes; prints JSON.

    python bench/latency.py [--json] [--model NAME_OR_PATH] [--repeats 30]

end_to_end = bytes of a real 512 px JPEG -> decode -> probabilities -> Grad-CAM -> overlay PNG bytes.
Reports medians (and p90) over --repeats runs after warm-up; these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import add_json_flag  # noqa: E402
from cxr.cli import resolve_model_path  # noqa: E402
from cxr.config import get_paths  # noqa: E402
from cxr.pipeline import analyze, explain, overlay_png  # noqa: E402
from cxr.predict import Predictor  # noqa: E402
from cxr.preprocess import to_model_input  # noqa: E402
from cxr.saliency import Explainer  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict:
    ordered = sorted(ms)
    return {"median": round(statistics.median(ms), 2), "p90": round(ordered[int(0.9 * (len(ms) - 1))], 2)}


def find_jpeg(data_root: Path) -> Path:
    """A real 512x512 test JPEG (an NIH image) from the dataset."""
    for path in sorted((data_root / "cxr-data" / "test" / "PNEUMONIA").glob("*.jpg")):
        return path
    raise SystemExit(f"no test JPEG under {data_root}/cxr-data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_json_flag(parser)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--image", type=Path, default=None)
    args = parser.parse_args()

    image = args.image or find_jpeg(get_paths().data_root)
    data = image.read_bytes()
    predictor = Predictor.from_path(resolve_model_path(args.model))
    explainer = Explainer(predictor.model, predictor.card.arch, predictor.card.binary)
    analysis = analyze(predictor, data, image.name)
    x = to_model_input(analysis.prepared)

    def end_to_end():
        a = analyze(predictor, data, image.name)
        return a.probs, overlay_png(a, explain(explainer, a))

    for _ in range(5):  # warm-up: tracing, first-call allocations
        predictor.predict_batch(x)
        end_to_end()
    result = {
        "model": predictor.card.name,
        "image": image.name,
        "image_px": list(analysis.img.shape[::-1]),
        "repeats": args.repeats,
        "predict_ms": summary(timed(lambda: predictor.predict_batch(x), args.repeats)),
        "gradcam_ms": summary(timed(lambda: explainer.heatmap(x, 0, "gradcam"), args.repeats)),
        "end_to_end_ms": summary(timed(end_to_end, args.repeats)),
    }
    for key in ("predict", "gradcam", "end_to_end"):
        result[f"{key}_ms_median"] = result[f"{key}_ms"]["median"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
