"""Out-of-distribution gate: the maths, its place in predictions, and the shipped model's gate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.ood import KIND_FLAGGED, non_chest_samples, ood_report
from cxr.ood import OOD_FILE, OodGate, feature_layers, legacy_layers
from cxr.predict import Predictor
from cxr.store import load_model
from tests import factory


def test_gate_scores_far_points_above_one_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    train, val = rng.normal(0, 1, (500, 16)), rng.normal(0, 1, (200, 16))
    gate = OodGate.fit(train, val)
    assert (gate.score(val) > 1).mean() <= 0.01
    assert (gate.score(rng.normal(0, 1, (200, 16))) > 1).mean() < 0.05
    assert (gate.score(rng.normal(4, 1, (50, 16))) > 1).all()
    gate.save(tmp_path)
    loaded = OodGate.load(tmp_path)
    assert np.allclose(loaded.score(val), gate.score(val))
    assert loaded.layers is None
    assert OodGate.load(tmp_path / "missing") is None
    OodGate.fit(train, val, layers=("s1", "gap")).save(tmp_path)
    assert OodGate.load(tmp_path).layers == ("s1", "gap")


@pytest.mark.parametrize("arch, size, expected", [
    ("cxrnet", 224, ("s2c2_relu", "s3c1_relu", "gap")),
    ("seed", 256, ("conv4", "conv5", "pool5")),
])
def test_gate_reads_the_end_of_every_stage_and_the_final_features(arch, size, expected):
    from cxr.model import build_model

    model = build_model(arch, 3, size)
    assert feature_layers(model) == expected
    assert legacy_layers(model) == expected[-1:]


def test_a_gate_saved_before_the_feature_ensemble_still_scores(tiny_model):
    """Old ood.npz files (no layer list) read the final features alone, as they were fitted on."""
    model, card = load_model(tiny_model)
    width = model.get_layer("gap").output.shape[-1]
    legacy = OodGate(np.zeros(width), np.eye(width), 1.0)
    predictor = Predictor(model, card, legacy)
    assert predictor.feature_layers == ("gap",)
    scores = predictor.ood_scores(predictor.infer_images([factory.phantom(120, 100)])[1])
    assert scores.shape == (1,) and np.isfinite(scores).all()


def test_trained_model_carries_a_gate_and_results_carry_ood(tiny_model):
    assert (tiny_model / OOD_FILE).is_file()
    gate, card = OodGate.load(tiny_model), load_model(tiny_model)[1]
    assert gate.layers == feature_layers(load_model(tiny_model)[0]) and len(gate.layers) > 1
    assert card.metrics["ood"]["layers"] == list(gate.layers)
    assert card.metrics["ood"]["validation_figure_like_flagged"] is not None
    result = Predictor.from_path(tiny_model).predict_file(factory.png_bytes(factory.phantom(200, 200)), "x.png")
    assert isinstance(result["ood"], bool) and isinstance(result["ood_score"], float)
    assert result["ood"] == (result["ood_score"] > 1.0)


def test_cli_predict_reports_ood_for_a_photograph(tmp_path):
    import skimage.data

    photo = tmp_path / "cat.png"
    photo.write_bytes(factory.png_bytes(skimage.data.chelsea()[..., 0]))
    out = subprocess.run([sys.executable, "-m", "cxr", "predict", "--json", "--model", str(factory.shipped_path()),
                          str(photo)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["ood"] is True and result["ood_score"] > 1.0


@pytest.fixture(scope="module")
def shipped_report(full_data):
    return ood_report(Predictor.from_path(factory.shipped_path()), full_data, "test")


def test_shipped_gate_flags_non_chest_images(shipped_report):
    assert len(non_chest_samples()) == 9
    flagged = {k: v["flagged"] for k, v in shipped_report["kinds"].items()}
    assert sum(f >= KIND_FLAGGED for f in flagged.values()) >= 8, flagged


def test_shipped_gate_passes_real_xrays(shipped_report):
    assert shipped_report["xray"]["n"] > 250
    assert shipped_report["xray"]["flagged"] <= 0.02, shipped_report["xray"]


def test_shipped_gate_passes_xrays_that_look_like_other_sources(shipped_report):
    """Cropped, lettered, re-compressed, darker, brighter or rotated: still chest X-rays. (The gate
    fitted on clean X-rays alone flagged 12 % of the figure-like ones.)"""
    flagged = shipped_report["xray_variants"]["flagged"]
    assert {"crop", "letters", "caption", "journal_figure", "darker", "rotated"} <= set(flagged)
    assert max(flagged.values()) <= 0.02, flagged
