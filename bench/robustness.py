"""How a model's predictions move when real X-rays are stored the way another hospital might; prints JSON.

    python bench/robustness.py [--model NAME_OR_PATH] [--data DIR] [--split test]

For each change in cxr.acquisition (darker, brighter, lower contrast, rotated 8 degrees) and each
true class: the mean change of P(own class) and of P(COVID19), accuracy before and after, and the
share of images that cross the COVID-19 threshold (COVID-19 images falling below it, the others
rising above it). A model that learnt the lungs should barely move; one that learnt how one
archive stores its images moves.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from bench.common import decoded_split, model_on_split
    from cxr.acquisition import CHANGES, change, robustness

    predictor, args = model_on_split(__doc__.splitlines()[0])
    images, decoded = decoded_split(predictor, args.data, args.split)
    probs = predictor.predict_proba(decoded)
    changed = {name: predictor.predict_proba([change(img, name, i) for i, img in enumerate(decoded)])
               for name in CHANGES}
    print(json.dumps({"model": predictor.card.name, "data": str(args.data), "split": args.split,
                      "covid_threshold": predictor.card.covid_threshold,
                      "changes": robustness(probs, changed, images.labels, predictor.classes,
                                            predictor.card.covid_threshold)}, indent=2))


if __name__ == "__main__":
    main()
