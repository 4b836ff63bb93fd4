"""The benchmark scripts run end to end and print the JSON their docs promise (small sizes)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run_bench(script: str, *args: str) -> dict:
    # Every bench takes --json (the issue's own command is `bench/shortcut.py --json`); its output is JSON anyway.
    out = subprocess.run([sys.executable, f"bench/{script}", *args, "--json"], cwd=REPO, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_throughput_bench_reports_every_figure(tiny_model, mini_data):
    r = run_bench("throughput.py", "--model", str(tiny_model), "--data", str(mini_data), "--mini", str(mini_data),
                  "--train-images", "16", "--epochs", "2")
    assert r["peak_gflops"] > 1 and r["model_gflop_per_img"] > 0
    assert r["train_img_per_s"] > 0 and r["infer_img_per_s"] > 0
    assert 0 < r["train_fraction_of_limit"] < 2 and 0 < r["infer_fraction_of_limit"] < 2
    assert r["peak_rss_mb"]["mini"]["peak_rss_mb"] > 100 and r["peak_rss_full_over_mini"] > 0
    b = r["breakdown"]["train"]
    assert b["compute_only_img_per_s"] > 0 and b["pipeline_only_img_per_s"] > 0


def test_robustness_bench_reports_every_change_and_class(tiny_model, mini_data):
    r = run_bench("robustness.py", "--model", str(tiny_model), "--data", str(mini_data))
    assert set(r["changes"]) == {"darker", "brighter", "low_contrast", "rotated"}
    for per_class in r["changes"].values():
        assert set(per_class) == {"COVID19", "NORMAL", "PNEUMONIA"}
        assert all(0 <= c["accuracy_after"] <= 1 and "crossed_threshold" in c for c in per_class.values())


def test_shortcut_bench_reports_probe_oracle_and_heat(tiny_model, mini_data, tmp_path):
    lungs = tmp_path / "no-lung-masks"  # the heat figures do without masks
    r = run_bench("shortcut.py", "--model", f"tiny={tiny_model}", "--data", str(mini_data), "--lungs", str(lungs),
                  "--cam-layer", "s3c1_relu")
    (result,) = r["results"]
    assert result["cam_layer"] == "s3c1_relu"
    assert result["probe"]["oracle"]["covid_at_or_above"] >= 0.95
    summary = r["summary"]["tiny"]
    assert 0 <= summary["normal_journal_figure_below_oracle_threshold"]["mean"] <= 1
    assert 0 <= summary["border_heat"]["mean"] <= 1


def test_shortcut_bench_locates_another_methods_heat_but_records_only_gradcam(tiny_model, mini_data, tmp_path):
    lungs = tmp_path / "no-lung-masks"
    r = run_bench("shortcut.py", "--model", str(tiny_model), "--data", str(mini_data), "--lungs", str(lungs),
                  "--method", "smoothgrad")
    (result,) = r["results"]
    assert result["heat"]["method"] == "smoothgrad" and 0 <= result["heat"]["border_original_mean"] <= 1
    refused = subprocess.run([sys.executable, "bench/shortcut.py", "--model", str(tiny_model), "--record",
                              "--method", "smoothgrad"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "--record keeps" in refused.stderr


def test_ensemble_bench_of_one_model_twice_reproduces_that_model(tiny_model, mini_data):
    # The mean of identical log-probabilities is the member itself: every figure must match.
    r = run_bench("ensemble.py", "--ensemble", f"twice={tiny_model},{tiny_model}", "--data", str(mini_data))
    (result,) = r["results"]
    assert result["ensemble"] == result["members"]["tiny"]
    assert 0 <= result["ensemble"]["normal_journal_figure_below_threshold"] <= 1
    assert math.isfinite(result["ensemble"]["validation_log_loss"]) and result["ensemble"]["validation_log_loss"] >= 0
    assert r["summary"]["twice"]["accuracy"]["members_mean"] == result["ensemble"]["accuracy"]


def test_ensemble_bench_refuses_members_with_another_validation_split(tiny_model, mini_data, tmp_path):
    from cxr.card import ModelCard

    other = tmp_path / "other-seed"
    shutil.copytree(tiny_model, other)
    card = ModelCard.load(other)
    card.training["config"]["seed"] += 1  # a different seed holds out different validation images
    card.save(other)
    # No data folder at all: the cards alone must refuse the pair, before any member is run on images.
    refused = subprocess.run([sys.executable, "bench/ensemble.py", "--ensemble", f"{tiny_model},{other}",
                              "--data", str(tmp_path / "no-data")], cwd=REPO, capture_output=True, text=True,
                             timeout=900)
    assert refused.returncode == 2 and "same validation images" in refused.stderr
    missing = subprocess.run([sys.executable, "bench/ensemble.py", "--ensemble", f"{tiny_model},no-such-model",
                              "--data", str(mini_data)], cwd=REPO, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "CXR_MODEL_DIR": str(tmp_path / "store")})
    assert missing.returncode == 2 and "no-such-model" in missing.stderr and "Traceback" not in missing.stderr


def test_threshold_bench_lists_the_validation_covid_images_and_each_group_left_out(tiny_model):
    from cxr.card import ModelCard

    r = run_bench("threshold.py", "--model", str(tiny_model))
    card = ModelCard.load(tiny_model)
    assert r["model"] == card.name and r["refitted_threshold"] == card.covid_threshold  # the card's own fit, redone
    scores = [i["p_covid"] for i in r["images"]]
    assert len(scores) == r["n_covid_validation"] == card.metrics["calibration"]["n_covid_validation"]
    assert scores == sorted(scores) and scores[0] >= r["refitted_threshold"]  # lowest first, all found
    # What the model calls each image is its most probable class, so never below a third of three.
    classes = card.classes
    assert all(i["called"] in classes and 1 / len(classes) - 1e-4 <= i["p_called"] <= 1 for i in r["images"])
    assert all(i["p_called"] >= i["p_covid"] for i in r["images"])
    assert all(i["p_called"] == i["p_covid"] for i in r["images"] if i["called"] == "COVID19")
    assert r["groups"] == len({i["group"] for i in r["images"]}) == len(r["threshold_without_group"])
    # Leaving out a group never lowers a threshold that every remaining image must clear.
    assert all(g["threshold"] >= r["refitted_threshold"] for g in r["threshold_without_group"].values())


def test_resolution_bench_follows_p_covid_from_full_size_down_to_a_figure(tiny_model, mini_data):
    from cxr.card import ModelCard

    r = run_bench("resolution.py", "--model", str(tiny_model), "--data", str(mini_data), "--sides", "4096,48")
    card = ModelCard.load(tiny_model)
    assert r["split"] == "validation" and r["threshold"] == card.covid_threshold
    assert sum(r["n"].values()) == card.training["data"]["n_validation"]
    untouched, tiny = r["by_side"]["4096"], r["by_side"]["48"]  # larger than any image / smaller than all
    for name, n in r["n"].items():
        found = r["clean_at_or_above_threshold"][name] > 0
        assert untouched[name] == {"mean_rise": 0.0, "shrunk": 0, "called_same": 1.0,
                                   "at_or_above_threshold": r["clean_at_or_above_threshold"][name],
                                   "kept_at_or_above": 1.0 if found else None}
        assert tiny[name]["shrunk"] == n and 0 <= tiny[name]["called_same"] <= 1
        # Kept: a share of those found as stored, so never more of them than are at or above now.
        kept = tiny[name]["kept_at_or_above"]
        assert (kept is None) == (not found)
        if found:
            assert kept * r["clean_at_or_above_threshold"][name] <= tiny[name]["at_or_above_threshold"] + 1e-3
        assert r["median_longest_side"][name] > 48


def test_resolution_bench_records_its_sweep_for_the_predict_pages_small_image_note(tiny_model, mini_data, tmp_path):
    from cxr.card import ModelCard
    from cxr.resolution import recorded_sweep, small_image_note

    model = shutil.copytree(tiny_model, tmp_path / "tiny")
    r = run_bench("resolution.py", "--model", str(model), "--data", str(mini_data), "--sides", "4096,48", "--record")
    card = ModelCard.load(model)
    assert recorded_sweep(card) == json.loads(json.dumps({k: v for k, v in r.items() if k != "model"}))
    note = small_image_note(card, 40)  # smaller than every image: the 48 px sweep speaks for it
    found = round(r["clean_at_or_above_threshold"]["COVID19"] * r["n"]["COVID19"])
    kept = round(r["by_side"]["48"]["COVID19"]["kept_at_or_above"] * found)
    assert found > 0 and f"Shrunk to 48 px, {kept} of the {found} it finds at full size" in note
    # The 4096 px sweep shrank nothing, so it says nothing about a 1000 px upload.
    assert small_image_note(card, 1000) is None
    # The shared model keeps the sweep its training recorded (cxr.train.finalize): left alone.
    assert set(ModelCard.load(tiny_model).metrics["resolution"]["by_side"]) == {"160", "220", "300", "420"}


def test_score_design_bench_fits_each_design_on_validation_and_scores_the_test_sets(tiny_model, mini_data):
    from cxr.card import ModelCard

    r = run_bench("score_design.py", "--model", str(tiny_model), "--data", str(mini_data))
    card = ModelCard.load(tiny_model)
    assert r["served_threshold"] == card.covid_threshold
    served = r["designs"]["covid_p"]
    assert served["threshold"] == card.covid_threshold  # the same fit calibrate made
    for design in ("covid_p", "covid_vs_normal_p"):
        point = r["designs"][design]
        assert point["validation_flagged"]["COVID19"] >= 0.95  # fitted to catch them
        assert set(point["flagged"]) == {"test COVID19", "test NORMAL", "test NORMAL, figure-like", "test PNEUMONIA",
                                         "test PNEUMONIA, figure-like"}
        assert all(0 <= v <= 1 for v in point["flagged"].values()) and min(point["n"].values()) > 0
    refused = subprocess.run([sys.executable, "bench/score_design.py", "--model", str(tiny_model), "--data",
                              str(mini_data / "no-such-folder")], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr


def test_bn_statistics_bench_scores_the_saved_and_both_recomputed_statistics(tiny_model, mini_data):
    r = run_bench("bn_statistics.py", "--model", str(tiny_model), "--data", str(mini_data), "--batches", "2")
    assert r["batch_norm_layers"] > 0 and sum(r["validation"].values()) > 0
    for name in ("saved", "recomputed_augmented", "recomputed_clean"):
        figures = r[name]
        assert 0 <= figures["accuracy"] <= 1 and math.isfinite(figures["log_loss"]) and figures["log_loss"] >= 0
        assert sum(figures["called"].values()) == sum(r["validation"].values())
    # Recomputing from a few batches of a 2-epoch model moves its statistics.
    assert r["recomputed_augmented"]["mean_shift"] > 0 and r["recomputed_clean"]["mean_shift"] > 0


def test_views_bench_reproduces_the_cards_calibration_and_applies_its_rule(tiny_model):
    from cxr.card import ModelCard
    from cxr.views import grid

    r = run_bench("views.py", "--model", str(tiny_model), "--set", "one=1", "--set", "scale3=0.92,1,1.08",
                  "--set", "grid9=0.92,1,1.08:0.04")
    card = ModelCard.load(tiny_model)
    one, nine = r["results"]["one"], r["results"]["grid9"]
    # One view is how the card was calibrated: the same temperature, log-loss, threshold and share.
    calibration = card.metrics["calibration"]
    # (Training scored validation through tf.data; the bench decodes with the library: equal to 1e-5.)
    assert one["temperature"] == pytest.approx(card.temperature, abs=2e-4)
    assert one["covid_threshold"] == pytest.approx(card.covid_threshold, abs=2e-4)
    assert one["val_log_loss"] == pytest.approx(calibration["nll_after"], abs=2e-4)
    assert one["clean_normals_below"] == card.metrics["validation"]["normal_below_threshold"]
    assert r["validation_images"] == card.metrics["validation"]["n"]
    assert r["figure_like_validation_normals"] == card.metrics["validation"]["per_class"]["NORMAL"]["support"]
    assert [one["views"], r["results"]["scale3"]["views"], nine["views"]] == [1, 3, 9]
    assert nine["spec"] == [list(v) for v in grid((0.92, 1, 1.08), 0.04)] and r["distinct_views_scored"] == 9
    assert nine["val_log_loss"] != one["val_log_loss"]  # the views were scored, not the box nine times
    # The rule: within 0.01 log-loss of the baseline, the best figure share, fewer views on a near-tie.
    allowed = {k: v for k, v in r["results"].items() if v["val_log_loss"] <= one["val_log_loss"] + 0.01}
    best = max(v["figure_like_normals_below"] for v in allowed.values())
    assert r["chosen"] in allowed and allowed[r["chosen"]]["figure_like_normals_below"] >= best - 0.01
    assert all(v["views"] >= allowed[r["chosen"]]["views"] for v in allowed.values()
               if v["figure_like_normals_below"] >= best - 0.01)


def test_views_bench_refuses_bad_sets_without_a_traceback(tiny_model):
    for bad in ("grid9", "far=1,1.7", "=1"):
        out = subprocess.run([sys.executable, "bench/views.py", "--model", str(tiny_model), "--set", bad],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and "--set" in out.stderr and "Traceback" not in out.stderr


def test_dicom_decode_bench_times_every_compression_against_uncompressed(mini_data):
    r = run_bench("dicom_decode.py", "--data", str(mini_data), "--side", "300", "--repeats", "2")
    assert r["pixels"][1] == 300 and r["uncompressed"]["decode_ms_median"] > 0
    for syntax in ("RLELossless", "JPEGLosslessProcess14_1", "JPEGLSLossless", "JPEG2000Lossless"):
        figures = r[syntax]
        assert 0 < figures["mb"] < r["uncompressed"]["mb"]
        assert figures["decode_ms_median"] > 0 and figures["codec_in_process_ms_median"] > 0
