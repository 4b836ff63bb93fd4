"""Would averaging stored models help? Ensembles of models that share a validation split; prints JSON.

    python bench/ensemble.py --ensemble [LABEL=]NAME,NAME[,...] [--ensemble ...] [--data DIR] [--seed N]

Members must have been trained on the same data with the same validation split (same validation
fraction and split seed: `train --split-seed`, else `--seed`), so the ensemble can be calibrated and
thresholded honestly on that split.
An ensemble's probabilities are the softmax of the mean of its members' log-probabilities (each at
its own card temperature), as `python -m cxr ensemble` builds it (cxr.ensemble); one temperature is then
fitted on validation and the COVID-19 threshold set at 95 % validation sensitivity, with the same
functions as training (cxr.calibration).
For the ensemble and for each member alone: clean and figure-like validation log-loss, the probe's
headline (share of journal-figure test normals below the validation threshold, and below the
oracle threshold fitted on the test COVID-19 images: a yardstick, never an operating point), clean
test specificity and sensitivity at the threshold, 3-class accuracy and COVID-19-vs-normal AUROC.
Grad-CAM heat of an ensemble is not measured here (bench/shortcut.py measures each member's).
Ensembles sharing a LABEL (e.g. one per seed) are summarised as mean and standard deviation.
Default data: $CXR_DATA_ROOT/cxr-data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.common import add_json_flag  # noqa: E402
from cxr.calibration import fit_temperature, nll, threshold_for_sensitivity  # noqa: E402
from cxr.card import ModelCard  # noqa: E402
from cxr.cli import resolve_model_path  # noqa: E402
from cxr.config import get_paths  # noqa: E402
from cxr.data import fingerprint, load_imageset, split_train_val  # noqa: E402
from cxr.ensemble import EnsembleError, check_members, split_key  # noqa: E402
from cxr.errors import CxrError  # noqa: E402
from cxr.predict import Predictor, apply_temperature  # noqa: E402
from cxr.probe import decode_class, degraded_views  # noqa: E402
from cxr.train import figure_validation_set  # noqa: E402

COVID, NORMAL = "COVID19", "NORMAL"


def member_outputs(path: Path, data: Path, seed: int) -> dict:
    """One model's probabilities (at its card temperature) on everything the figures are computed
    from; `seed`: the probe's degradations (its validation split is the card's)."""
    predictor = Predictor.from_path(path)
    card = predictor.card
    recorded, split, val_fraction, split_seed = split_key(card)
    images = load_imageset(data, split, card.classes)
    if fingerprint(images) != recorded:
        raise EnsembleError(f"{card.name} was not trained on the data at {data}/{split}")
    _, val_set = split_train_val(images, val_fraction, split_seed)
    val_probs, val_labels, _ = predictor.infer_imageset(val_set)
    figure_x, figure_labels = figure_validation_set(val_set, card.image_size, card.resize_policy, split_seed,
                                                        card.test_time_views)
    test = load_imageset(data, "test", card.classes)
    test_probs, test_labels, _ = predictor.infer_imageset(test)
    normals = decode_class(test, NORMAL)
    return {
        "name": card.name, "card": card, "classes": card.classes,
        "val": val_probs, "val_labels": val_labels,
        "figure_val": predictor.infer_views(figure_x)[0], "figure_val_labels": figure_labels,
        "test": test_probs, "test_labels": test_labels,
        "normal_figures": predictor.infer_images(degraded_views(normals, "journal_figure", seed))[0],
    }


def combine(members: list[dict]) -> dict:
    """The ensemble's (uncalibrated) outputs: softmax of the members' mean log-probability."""
    out = dict(members[0], name="+".join(m["name"] for m in members))
    for key in ("val", "figure_val", "test", "normal_figures"):
        logits = np.mean([np.log(np.clip(m[key], 1e-12, 1)) for m in members], 0)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        out[key] = exp / exp.sum(axis=1, keepdims=True)
    return out


def figures(outputs: dict) -> dict:
    """Calibrate on validation, threshold at 95 % validation sensitivity, then the headline figures."""
    from sklearn.metrics import roc_auc_score

    temperature = fit_temperature(outputs["val"], outputs["val_labels"])
    val, figure_val, test, normal_figures = (apply_temperature(outputs[k], temperature)
                                             for k in ("val", "figure_val", "test", "normal_figures"))
    covid, normal = outputs["classes"].index(COVID), outputs["classes"].index(NORMAL)
    labels = outputs["test_labels"]
    threshold = threshold_for_sensitivity(val[:, covid], outputs["val_labels"] == covid, 0.95)
    test_covid, test_normal = test[labels == covid, covid], test[labels == normal, covid]
    oracle = threshold_for_sensitivity(test_covid, np.ones(len(test_covid), bool), 0.95)
    pair = (labels == covid) | (labels == normal)
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "temperature": r(temperature), "covid_threshold": r(threshold),
        "validation_log_loss": r(nll(val, outputs["val_labels"])),
        "validation_figure_like_log_loss": r(nll(figure_val, outputs["figure_val_labels"])),
        "normal_journal_figure_below_threshold": r((normal_figures[:, covid] < threshold).mean()),
        "normal_journal_figure_below_oracle_threshold": r((normal_figures[:, covid] < oracle).mean()),
        "normal_clean_below_threshold": r((test_normal < threshold).mean()),
        "covid_sensitivity": r((test_covid >= threshold).mean()),
        "accuracy": r((test.argmax(1) == labels).mean()),
        "covid_vs_normal_auroc": r(roc_auc_score(labels[pair] == covid, test[pair, covid])),
    }


def summarise(results: list[dict]) -> dict:
    """Mean and spread over ensembles, and over their members' means (what ensembling added)."""
    out = {"n": len(results)}
    for key in results[0]["ensemble"]:
        ens = [r["ensemble"][key] for r in results]
        alone = [float(np.mean([m[key] for m in r["members"].values()])) for r in results]
        out[key] = {"mean": round(float(np.mean(ens)), 4),
                    "std": round(float(np.std(ens, ddof=1)), 4) if len(ens) > 1 else 0.0,
                    "members_mean": round(float(np.mean(alone)), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", action="append", required=True,
                        help="[LABEL=]NAME,NAME[,...]: store names or model folders; repeatable")
    parser.add_argument("--data", type=Path, default=get_paths().data_root / "cxr-data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe's degradations")
    add_json_flag(parser)
    args = parser.parse_args()

    cache: dict[str, dict] = {}  # a model in several ensembles is run once
    groups: dict[str, list[dict]] = {}
    results = []
    for spec in args.ensemble:
        label, _, joined = spec.rpartition("=")
        names = joined.split(",")
        try:
            paths = [resolve_model_path(name) for name in names]
            # refuse a mixed set from the cards alone, before a minute of inference per member
            check_members([ModelCard.load(path) for path in paths])
            for name, path in zip(names, paths, strict=True):
                if name not in cache:
                    cache[name] = member_outputs(path, args.data, args.seed)
            members = [cache[name] for name in names]
            ensemble = combine(members)
        except CxrError as exc:  # a mixed set, a missing model, other data: a usage error, not a traceback
            parser.error(str(exc))
        result = {"ensemble_of": [m["name"] for m in members], "ensemble": figures(ensemble),
                  "members": {m["name"]: figures(m) for m in members}}
        results.append(result)
        groups.setdefault(label or ensemble["name"], []).append(result)
        print(f"measured {ensemble['name']}", file=sys.stderr, flush=True)
    print(json.dumps({"data": str(args.data), "probe_seed": args.seed, "results": results,
                      "summary": {label: summarise(rs) for label, rs in groups.items()}}, indent=2))


if __name__ == "__main__":
    main()
