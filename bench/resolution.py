"""How P(COVID19) moves when the validation X-rays arrive at a journal figure's resolution; prints JSON.

    python bench/resolution.py [--model NAME_OR_PATH] [--data DIR] [--sides 160,220,300,420] [--record]

Each validation image of the split the model's card records is shrunk to each longest side and back
(`cxr.resolution`), and the bench reports per class the mean change of P(COVID19), the share at or
above the card's threshold and the share still called the same class. Validation only: no test image.
--record stores the report in the model's card, so the Predict page can say what an upload of a
figure's size loses (`cxr.resolution.small_image_note`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import model_and_recorded_split  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    from cxr.errors import CxrError
    from cxr.resolution import SIDES, validation_record

    def add_arguments(parser):
        parser.add_argument("--sides", default=",".join(map(str, SIDES)),
                            help="longest sides in px, comma-separated")
        parser.add_argument("--record", action="store_true", help="store the report in the model's card")

    predictor, _, val, args = model_and_recorded_split(__doc__.splitlines()[0], argv, add_arguments)
    try:
        sides = [int(s) for s in args.sides.split(",") if s.strip()]
        record = validation_record(predictor, val, args.data, sides)
    except (CxrError, ValueError) as e:
        sys.exit(f"resolution.py: {e}")
    if args.record:
        from cxr.cli import resolve_model_path

        predictor.card.metrics["resolution"] = record  # saved as JSON
        predictor.card.save(resolve_model_path(args.model))
    print(json.dumps({"model": predictor.card.name, **record}, indent=2))


if __name__ == "__main__":
    main()
