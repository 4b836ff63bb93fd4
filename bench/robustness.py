"""How a model's predictions move when real X-rays are stored the way another hospital might; prints JSON.

    python bench/robustness.py [--model NAME_OR_PATH] [--data DIR] [--split test]

For each change in cxr.acquisition (darker, brighter, lower contrast, rotated 8 degrees) and each
true class: the mean change of P(own class) and of P(COVID19), accuracy before and after, and the
share of images that cross the COVID-19 threshold (COVID-19 images falling below it, the others
rising above it). A model that learnt the lungs should barely move; one that learnt how one
archive stores its images moves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from cxr.acquisition import CHANGES, change, robustness
    from cxr.cli import resolve_model_path
    from cxr.config import get_paths
    from cxr.data import load_imageset
    from cxr.decode import decode_image
    from cxr.predict import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=get_paths().data_root / "cxr-data")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    predictor = Predictor.from_path(resolve_model_path(args.model))
    images = load_imageset(args.data, args.split, predictor.classes)
    decoded = [decode_image(p) for p in images.paths]
    probs = predictor.predict_proba(decoded)
    changed = {name: predictor.predict_proba([change(img, name, i) for i, img in enumerate(decoded)])
               for name in CHANGES}
    print(json.dumps({"model": predictor.card.name, "data": str(args.data), "split": args.split,
                      "covid_threshold": predictor.card.covid_threshold,
                      "changes": robustness(probs, changed, images.labels, predictor.classes,
                                            predictor.card.covid_threshold)}, indent=2))


if __name__ == "__main__":
    main()
