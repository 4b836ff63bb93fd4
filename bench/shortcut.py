"""Shortcut probe of one or more models on the internal test split; prints JSON.

    python bench/shortcut.py [--json] [--model [LABEL=]NAME_OR_PATH ...] [--data DIR] [--lungs DIR] [--record]
                             [--cam-layer LAYER] [--method gradcam|smoothgrad|...]

For each model: the journal-figure probe (P(COVID19) of degraded NORMAL/PNEUMONIA test images),
where Grad-CAM heat falls (border frame, centre, lung masks of ../cxr-lungs), and the internal
test metrics overall and per normal source. Models sharing a LABEL (e.g. three seeds of one
recipe) are also summarised as mean and standard deviation. --record stores each model's figures
in its card (metrics.shortcut_probe) for the app's Evaluation page. --method measures where another
saliency method's heat falls (SmoothGrad: input gradients, a check on a Grad-CAM figure that a
model's pooling shapes by construction); --record keeps Grad-CAM, the app's default.
Default data: $CXR_DATA_ROOT/cxr-data and $CXR_DATA_ROOT/cxr-lungs; default model: the active one.
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
from cxr.cli import resolve_model_path  # noqa: E402
from cxr.config import get_paths  # noqa: E402
from cxr.predict import Predictor  # noqa: E402
from cxr.probe import figure_probe, heat_location, lung_masks  # noqa: E402
from cxr.report import metrics_by_normal_source, score_designs  # noqa: E402
from cxr.saliency import METHODS, Explainer  # noqa: E402

# Figures worth comparing between recipes: (name, path into one model's result).
HEADLINE = {
    "normal_journal_figure_below_threshold": ("probe", "normal_journal_figure_below_threshold"),
    # The same at a threshold fitted to the test COVID-19 images (cxr.probe.oracle_operating_point):
    # what is still above it is the model's discrimination, not the validation threshold's noise.
    "normal_journal_figure_below_oracle_threshold": ("probe", "oracle", "normal_journal_figure_below"),
    "normal_journal_figure_mean_rise": ("probe", "classes", "NORMAL", "journal_figure", "mean_rise"),
    "pneumonia_journal_figure_mean_rise": ("probe", "classes", "PNEUMONIA", "journal_figure", "mean_rise"),
    # On the original X-ray (heat mapped back, zero where the model saw nothing): where source
    # cues live. The *_input figures are the same on the model's own input frame.
    "border_heat": ("heat", "border_original_mean"),
    "lung_heat": ("heat", "lungs_original_mean"),
    "lung_area": ("heat", "lung_area_original_mean"),
    "border_heat_input": ("heat", "border_mean"),
    # Yardsticks: heat spread evenly over the model's view / over the true lung masks only.
    "border_heat_even_view": ("heat", "border_even_view_mean"),
    "border_heat_lungs_only": ("heat", "border_lungs_only_mean"),
    # ... and over the segmented lungs of every image, at the heatmap's own grid (cxr.probe.even_lung_heat).
    "border_heat_lung_cells": ("heat", "border_lung_cells_mean"),
    "lung_heat_input": ("heat", "lungs_mean"),
    "accuracy": ("internal", "accuracy"),
    "balanced_accuracy": ("internal", "balanced_accuracy"),
    "macro_auroc": ("internal", "macro_auroc"),
    "covid_vs_normal_accuracy": ("internal", "binary", "accuracy"),
    "covid_vs_normal_auroc": ("internal", "binary", "auroc"),
    "ece": ("internal", "ece"),
    "abnormal_auroc": ("score_designs_auroc", "abnormal_p"),
    "covid_vs_rest_auroc": ("score_designs_auroc", "covid_vs_rest_p"),
    "nih_normal_accuracy": ("by_normal_source", "nih", "accuracy"),
    "openist_normal_accuracy": ("by_normal_source", "openist", "accuracy"),
}


def probe_model(path: Path, data: Path, split: str, lungs: Path, seed: int, cam_layer: str | None = None,
                method: str = "gradcam") -> dict:
    predictor = Predictor.from_path(path)
    card = predictor.card
    images, probs, labels, metrics = predictor.evaluate(data, split)
    started = time.perf_counter()
    probe = figure_probe(predictor, images, seed)
    explainer = Explainer(predictor.model, card.arch, card.binary, cam_layer)
    heat = heat_location(predictor, explainer, images, lung_masks(lungs, split), method)
    return {
        "model": card.name, "path": str(path), "covid_threshold": card.covid_threshold,
        "cam_layer": explainer.cam_layer,
        "temperature": card.temperature, "source_cues": card.training.get("config", {}).get("source_cues", 0.0),
        "probe": probe, "heat": heat, "internal": metrics,
        "by_normal_source": metrics_by_normal_source(images, probs, labels, card.covid_threshold),
        "score_designs_auroc": score_designs(probs, labels, images.classes),
        "probe_seconds": round(time.perf_counter() - started, 1),
    }


def dig(result: dict, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def summarise(results: list[dict]) -> dict:
    out = {"n_models": len(results), "models": [r["model"] for r in results]}
    for name, keys in HEADLINE.items():
        values = [v for v in (dig(r, keys) for r in results) if isinstance(v, int | float)]
        if values:
            out[name] = {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values, ddof=1)), 4)
                         if len(values) > 1 else 0.0, "values": [round(float(v), 4) for v in values]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="[LABEL=]NAME_OR_PATH; repeatable")
    parser.add_argument("--data", type=Path, default=get_paths().data_root / "cxr-data")
    parser.add_argument("--lungs", type=Path, default=get_paths().data_root / "cxr-lungs")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradations")
    parser.add_argument("--record", action="store_true", help="store the figures in each model's card")
    parser.add_argument("--cam-layer", default=None,
                        help="the layer Grad-CAM reads (default: the one the app reads)")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS),
                        help="the saliency method whose heat is located (default: Grad-CAM, as the app)")
    add_json_flag(parser)
    args = parser.parse_args()
    if args.record and (args.cam_layer or args.method != "gradcam"):
        parser.error("--record keeps the app's own Grad-CAM: drop --cam-layer and --method")

    groups: dict[str, list[dict]] = {}
    results = []
    for spec in args.model or [None]:
        label, _, name = spec.rpartition("=") if spec else ("", "", None)
        path = resolve_model_path(name)
        result = probe_model(path, args.data, args.split, args.lungs, args.seed, args.cam_layer, args.method)
        results.append(result)
        groups.setdefault(label or result["model"], []).append(result)
        if args.record:
            from cxr.card import ModelCard

            card = ModelCard.load(path)
            card.metrics["shortcut_probe"] = {"data": str(args.data), "split": args.split,
                                              "probe": result["probe"], "heat": result["heat"]}
            card.save(path)
        print(f"probed {result['model']}", file=sys.stderr, flush=True)
    print(json.dumps({"data": str(args.data), "split": args.split, "results": results,
                      "summary": {label: summarise(rs) for label, rs in groups.items()}}, indent=2))


if __name__ == "__main__":
    main()
