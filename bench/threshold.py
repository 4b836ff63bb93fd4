"""Which validation COVID-19 images set a model's COVID-19 threshold, and how far one patient moves it; prints JSON.

    python bench/threshold.py [--model NAME_OR_PATH] [--data DIR]

The threshold is fitted on the validation split the model's card records (95 % sensitivity: with
fewer than 20 COVID-19 images, every one of them must clear it, so the lowest one sets it). This
lists those images with their calibrated P(COVID19), the class the model calls each (its most
probable) and their group (patient or publication, from the manifest), lowest first, and the
threshold refitted with each group left out (`cxr.threshold_report`, which the Evaluation page
shows too). Validation only: no test image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    from bench.common import add_json_flag
    from cxr.cli import resolve_model_path
    from cxr.predict import Predictor
    from cxr.threshold_report import threshold_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=None,
                        help="the training data, if not at the path the card records (its fingerprint must match)")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    print(json.dumps(threshold_report(Predictor.from_path(resolve_model_path(args.model)), args.data), indent=2))


if __name__ == "__main__":
    main()
