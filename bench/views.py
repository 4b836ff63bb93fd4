"""Which test-time views should a model serve with? Validation figures for candidate view sets; prints JSON.

    python bench/views.py --model NAME_OR_PATH --set LABEL=SCALES[:SHIFT] [--set ...] [--data DIR] [--out FILE]

e.g. `--set one=1 --set scale3=0.92,1,1.08 --set grid9=0.92,1,1.08:0.04` (scales of the lung box,
and the shift left and right as a fraction of its side: `cxr.views.grid`). The first set is the
baseline the rule compares with; give it one view (`1`) to compare with plain serving.

Everything is measured on the validation split the model's card records, never the test split:
for each set, the softmax of its views' mean logits (`cxr.views.average`, as a model serving that set
scores), the temperature refitted on it, the validation log-loss, the COVID-19 threshold at 95 %
validation sensitivity, and the share of clean and of figure-like validation normals below that
threshold. "Figure-like" is the probe's own journal-figure cue (`cxr.probe`, `--seed`, default 0) on the
validation normals, the measure the rule was written for. Every distinct view is scored once.

The rule (models/README.md, "Averaging over views of the lung box", written before the shipped
views were chosen): a set whose log-loss is more than 0.01 above the baseline's is out; of the rest,
the highest share of figure-like normals below the threshold wins, and within 0.01 of that share
the fewest views. The choice is `chosen` in the JSON; then set it with `python -m cxr calibrate
--test-time-scales ...` and measure it on test with bench/shortcut.py.
Default data: the path the card records (or --data with the same fingerprint).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.common import add_json_flag  # noqa: E402
from cxr.calibration import fit_temperature, nll, threshold_for_sensitivity  # noqa: E402
from cxr.cli import resolve_model_path  # noqa: E402
from cxr.decode import decode_image  # noqa: E402
from cxr.errors import CxrError  # noqa: E402
from cxr.predict import Predictor, apply_temperature  # noqa: E402
from cxr.probe import degraded_views  # noqa: E402
from cxr.store import load_model  # noqa: E402
from cxr.train import recorded_split  # noqa: E402
from cxr.views import IDENTITY, average, grid  # noqa: E402

LOG_LOSS_SLACK = 0.01  # a set may cost this much validation log-loss over the baseline
SHARE_TIE = 0.01  # shares this close count as equal; fewer views win


def parse_set(text: str) -> tuple[str, list[tuple[float, float, float]]]:
    """'LABEL=0.92,1,1.08:0.04' -> (label, views); one view is [IDENTITY]."""
    label, sep, spec = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=SCALES[:SHIFT], got {text!r}")
    scales, _, shift = spec.partition(":")
    try:
        views = grid([float(s) for s in scales.split(",")], float(shift or 0))
    except (ValueError, CxrError) as exc:  # not a number; a view check_views refuses
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc
    return label, views or [IDENTITY]


def averaged(probs: np.ndarray, idx: list[int]) -> np.ndarray:
    """(N, K, C) per-view probabilities -> (N, C): the softmax of the mean logits of views `idx`."""
    return average(probs[:, idx].reshape(-1, probs.shape[-1]), len(idx))


def set_figures(probs: np.ndarray, labels: np.ndarray, fig_probs: np.ndarray, classes: list[str]) -> dict:
    """Validation figures of one view set from its averaged (uncalibrated) probabilities: `probs` of the
    validation images (`labels`), `fig_probs` of the figure-like validation normals."""
    temperature = fit_temperature(probs, labels)
    calibrated, fig_calibrated = apply_temperature(probs, temperature), apply_temperature(fig_probs, temperature)
    covid, normal = classes.index("COVID19"), classes.index("NORMAL")
    is_covid = labels == covid
    threshold = threshold_for_sensitivity(calibrated[:, covid], is_covid)
    below = lambda p: round(float((p[:, covid] < threshold).mean()), 4)  # noqa: E731
    return {
        "temperature": temperature,
        "val_log_loss": round(nll(calibrated, labels), 4),
        "val_accuracy": round(float((calibrated.argmax(1) == labels).mean()), 4),
        "covid_threshold": threshold,
        "lowest_val_covid": [round(float(v), 3) for v in np.sort(calibrated[is_covid, covid])[:4]],
        "clean_normals_below": below(calibrated[labels == normal]),
        "figure_like_normals_below": below(fig_calibrated),
    }


def choose(results: dict, baseline: str) -> str:
    """The rule in the module docstring: validation log-loss guard, then figure share, then fewer views."""
    limit = results[baseline]["val_log_loss"] + LOG_LOSS_SLACK
    allowed = {k: r for k, r in results.items() if r["val_log_loss"] <= limit}
    best = max(r["figure_like_normals_below"] for r in allowed.values())
    near = [k for k, r in allowed.items() if r["figure_like_normals_below"] >= best - SHARE_TIE]
    return min(near, key=lambda k: (allowed[k]["views"], -allowed[k]["figure_like_normals_below"]))


def run(model_path: Path, sets: list[tuple[str, list]], data: Path | None = None, seed: int = 0) -> dict:
    model, card = load_model(model_path)
    if "COVID19" not in card.classes or "NORMAL" not in card.classes:
        raise CxrError(f"{card.name} has no COVID19 and NORMAL classes to compare views on")
    union = list(dict.fromkeys(v for _, views in sets for v in views))
    union = [IDENTITY] + [v for v in union if v != IDENTITY]  # view 0 must be the box (cxr.views)
    # One predictor serving every distinct view at temperature 1; each set is averaged from its views below.
    card.temperature, card.test_time_views = 1.0, [list(v) for v in union[1:] and union]
    every_view = Predictor(model, card)
    _, val_set = recorded_split(card, data)

    start = time.perf_counter()
    decoded, labels = [], []  # (path, image): what the probe's degradations take
    for path, label in zip(val_set.paths, val_set.labels, strict=False):
        try:
            decoded.append((Path(path), decode_image(path)))
            labels.append(label)
        except CxrError as exc:
            print(f"skipping {Path(path).name}: {exc}", file=sys.stderr)
    normal = card.classes.index("NORMAL")
    imgs = [img for _, img in decoded]
    figures = degraded_views([d for d, y in zip(decoded, labels, strict=True) if y == normal], "journal_figure", seed)
    clean, figure_probs = every_view.per_view_probs(imgs), every_view.per_view_probs(figures)
    labels = np.asarray(labels)

    results = {}
    for label, chosen_views in sets:
        idx = [union.index(v) for v in chosen_views]
        results[label] = {"views": len(idx), "spec": [list(v) for v in chosen_views],
                          **set_figures(averaged(clean, idx), labels, averaged(figure_probs, idx), card.classes)}
    return {"model": str(model_path), "validation_images": len(labels),
            "figure_like_validation_normals": len(figures), "figure_seed": seed,
            "distinct_views_scored": len(union), "seconds": round(time.perf_counter() - start, 1),
            "baseline": sets[0][0], "chosen": choose(results, sets[0][0]), "results": results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="store name or folder of the model")
    parser.add_argument("--set", dest="sets", type=parse_set, action="append", required=True,
                        metavar="LABEL=SCALES[:SHIFT]")
    parser.add_argument("--data", type=Path, default=None, help="stands in for the data path the card records")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe's journal-figure cue")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    labels = [label for label, _ in args.sets]
    if len(set(labels)) != len(labels):
        parser.error("each --set needs its own LABEL")
    try:
        report = run(resolve_model_path(args.model), args.sets, args.data, args.seed)
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
