"""Each COVID-19 score design at its own validation threshold: normals kept below, pneumonias flagged; prints JSON.

    python bench/score_design.py [--model NAME_OR_PATH] [--data DIR] [--seed S]

The library serves P(COVID19) and fits its threshold on validation to catch every COVID-19 image
(fewer than 20: the lowest sets it). When that lowest film is one the model reads as pneumonia, a
score of COVID-19 against normal only, P(COVID19) / (P(COVID19) + P(NORMAL)), would sit higher on
it. This fits each design's threshold the same way on the validation split the card records, then
reports what each flags: validation classes, and on the test split COVID-19 found, normals and
pneumonias clean and made to look like journal figures (the probe's `journal_figure`, same seed).
Measures only; the served score does not change (`cxr.score_design`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> None:
    from bench.common import model_and_recorded_split
    from cxr.calibration import threshold_rule_of
    from cxr.data import load_imageset
    from cxr.decode import decode_image
    from cxr.errors import CxrError
    from cxr.probe import decode_class, degraded_views
    from cxr.score_design import operating_points

    def add_arguments(parser):
        parser.add_argument("--seed", type=int, default=0, help="seed of the figure-like degradations (the probe's)")

    # --data is the training data the card records; its test/ is scored too.
    predictor, _, val, args = model_and_recorded_split(__doc__.splitlines()[0], argv, add_arguments)
    try:
        val_probs = predictor.infer_images([decode_image(p) for p in val.paths])[0]
        test = load_imageset(args.data, "test", predictor.classes)
        sets = {}
        for name in test.classes:
            decoded = decode_class(test, name)
            sets[f"test {name}"] = predictor.infer_images([img for _, img in decoded])[0]
            if name != "COVID19":
                figures = degraded_views(decoded, "journal_figure", args.seed)
                sets[f"test {name}, figure-like"] = predictor.infer_images(figures)[0]
        # The card's threshold rule, so the served design's threshold is the one calibrate fitted.
        rule = threshold_rule_of(predictor.card)
        points = operating_points(val_probs, val.labels, sets, predictor.classes, rule=rule, val_groups=val.groups)
    except CxrError as e:
        sys.exit(f"score_design.py: {e}")
    print(json.dumps({"model": predictor.card.name, "data": str(args.data), "seed": args.seed,
                      "served_threshold": predictor.card.covid_threshold, "threshold_rule": rule,
                      "designs": points}, indent=2))


if __name__ == "__main__":
    main()
