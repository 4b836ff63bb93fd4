"""Accuracy of a model on the internal test split, overall and per normal source; prints JSON.

    python bench/accuracy.py [--data DIR] [--split test] [--model NAME_OR_PATH]

Default data: $CXR_DATA_ROOT/cxr-data; default model: the active one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import model_on_split  # noqa: E402
from cxr.report import metrics_by_normal_source  # noqa: E402


def main() -> None:
    predictor, args = model_on_split(__doc__.splitlines()[0])
    started = time.perf_counter()
    images, probs, labels, metrics = predictor.evaluate(args.data, args.split)
    seconds = time.perf_counter() - started
    result = {
        "model": predictor.card.name,
        "data": str(args.data),
        "split": args.split,
        "seconds": round(seconds, 2),
        **metrics,
        "by_normal_source": metrics_by_normal_source(images, probs, labels, predictor.card.covid_threshold),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
