"""The CLI as other tools call it: real subprocesses, JSON on stdout, exit codes, no tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import factory

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cxr", *map(str, args)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_summary_of_reference_model_shows_published_parameter_count():
    out = run_cli("summary", "--arch", "seed", "--binary")
    assert out.returncode == 0, out.stderr
    assert "Total params: 1,448,257" in out.stdout


def test_predict_json_and_exit_codes(tiny_model, mini_data, tmp_path):
    good = sorted((mini_data / "test" / "PNEUMONIA").glob("*.jpg"))[:2]
    out = run_cli("predict", *good, "--model", tiny_model, "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [r["file"] for r in results] == [str(p) for p in good]
    for r in results:
        assert r["label"] in ("COVID19", "NORMAL", "PNEUMONIA")
        assert set(r["probabilities"]) == {"COVID19", "NORMAL", "PNEUMONIA"}
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4)

    bad = tmp_path / "scan.png"
    bad.write_bytes(b"<html>not an x-ray</html>")
    out = run_cli("predict", good[0], bad, tmp_path / "missing.jpg", "--model", tiny_model, "--json")
    assert out.returncode == 2
    results = json.loads(out.stdout)
    assert "label" in results[0]
    assert "not a PNG, JPEG or DICOM" in results[1]["error"]
    assert "not found" in results[2]["error"]
    assert "Traceback" not in out.stderr


def test_predict_accepts_dicom(tiny_model, tmp_path):
    path = tmp_path / "chest.dcm"
    path.write_bytes(factory.dicom_bytes(factory.phantom(200, 160), photometric="MONOCHROME1", bits=8))
    out = run_cli("predict", path, "--model", tiny_model, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["file"] == str(path)


def test_evaluate_json_shape(tiny_model, mini_data):
    out = run_cli("evaluate", "--data", mini_data, "--split", "test", "--model", tiny_model, "--json")
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["n"] == 12
    assert set(m) >= {"n", "accuracy", "macro_auroc", "per_class", "confusion", "binary", "ece"}
    assert set(m["per_class"]["COVID19"]) == {"precision", "recall", "f1", "support"}
    assert m["confusion"]["labels"] == ["COVID19", "NORMAL", "PNEUMONIA"]
    assert sum(map(sum, m["confusion"]["matrix"])) == 12
    assert set(m["binary"]) >= {"auroc", "accuracy", "sensitivity", "specificity", "threshold"}
    assert 0 <= m["ece"] <= 1


def test_evaluate_bare_folder_without_split(tiny_model, mini_data):
    out = run_cli("evaluate", "--data", mini_data / "test", "--model", tiny_model, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["n"] == 12


def test_missing_active_model_is_a_message_not_a_traceback(tmp_path, mini_data):
    out = run_cli("predict", next((mini_data / "test" / "NORMAL").iterdir()), "--json",
                  env={"CXR_MODEL_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "No active model" in out.stderr and "Traceback" not in out.stderr


def test_train_activate_and_templates(mini_data, tmp_path):
    env = {"CXR_MODEL_DIR": str(tmp_path / "store")}
    out = run_cli("train", "--data", mini_data, "--epochs", "1", "--image-size", "64", "--batch-size", "8",
                  "--lr", "5e-5", "--name", "cli1", "--activate", env=env)
    assert out.returncode == 0, out.stderr
    assert "epoch 1/1 " in out.stderr and "learning_rate=5e-05" in out.stderr  # the progress line shows a small rate
    summary = json.loads(out.stdout)
    assert summary["name"] == "cli1" and summary["activated"] is True
    assert (tmp_path / "store" / "ACTIVE").read_text().strip() == "cli1"
    card = json.loads((tmp_path / "store" / "cli1" / "card.json").read_text())
    assert card["training"]["command"].startswith("python -m cxr train --data")

    out = run_cli("templates", "--data", mini_data, "--out", tmp_path / "tpl", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"] == {"COVID19": 8, "NORMAL": 8, "PNEUMONIA": 8}
    from cxr.templates import load_templates

    templates = load_templates(tmp_path / "tpl")
    assert set(templates) == {"COVID19", "NORMAL", "PNEUMONIA"}
    assert templates["NORMAL"][0].shape == (64, 64) and templates["NORMAL"][1] == 8


def test_train_on_missing_folder_is_a_clear_error(tmp_path):
    out = run_cli("train", "--data", tmp_path / "nowhere", env={"CXR_MODEL_DIR": str(tmp_path)})
    assert out.returncode == 2 and "Cannot find" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_record_stores_metrics_in_the_card(tiny_model, mini_data, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    out = run_cli("evaluate", "--data", mini_data, "--split", "test", "--model", model, "--json",
                  "--record", "internal_test")
    assert out.returncode == 0, out.stderr
    card = json.loads((model / "card.json").read_text())
    assert card["metrics"]["internal_test"]["n"] == 12
    assert card["metrics"]["internal_test"]["accuracy"] == json.loads(out.stdout)["accuracy"]
    assert "validation" in card["metrics"]


def test_predict_folder_streams_json_csv_and_progress(tiny_model, mini_data, tmp_path):
    import csv

    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    expected = []
    for i, src in enumerate(sorted((mini_data / "test").rglob("*.jpg"))[:5]):
        dst = (folder / "sub" if i % 2 else folder) / f"{i}-{src.name}"
        dst.write_bytes(src.read_bytes())
        expected.append(dst)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image, not even tried")
    out_csv = tmp_path / "out.csv"
    out = run_cli("predict", folder, "--model", tiny_model, "--json", "--csv", out_csv, "--batch-size", "2")
    assert out.returncode == 2, out.stderr  # one file was unreadable
    results = json.loads(out.stdout)
    files = [r["file"] for r in results]
    assert len(files) == 6 and str(folder / "broken.png") in files and "notes.txt" not in out.stdout
    assert set(files) - {str(folder / "broken.png")} == {str(p) for p in expected}
    assert all(isinstance(r["ood"], bool) for r in results if "error" not in r)
    assert all(r["longest_side_px"] > 0 and r["small_image"] is False for r in results if "error" not in r)
    assert "6/6 files" in out.stderr  # the progress bar reached the end
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["file"] for r in rows] == files
    broken = next(r for r in rows if r["file"].endswith("broken.png"))
    assert broken["error"] and not broken["label"]
    ok = next(r for r in rows if not r["error"])
    assert abs(sum(float(ok[f"p_{c}"]) for c in ("COVID19", "NORMAL", "PNEUMONIA")) - 1) < 1e-3
    # The tiny model's recorded sweep measured nothing at 128 px, so nothing is flagged small.
    assert int(ok["longest_side_px"]) > 0 and ok["small_image"] == "False"


def test_train_command_defaults_are_the_library_defaults():
    """The CLI keeps its defaults as literals (so --help needs no TensorFlow); they must not drift
    from TrainConfig's, which the app's Retrain page reads."""
    import dataclasses

    from cxr.calibration import THRESHOLD_RULES
    from cxr.cli import build_parser
    from cxr.train import PRECISE_BN_SOURCES, TrainConfig

    args = build_parser().parse_args(["train", "--data", "x"])
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    pairs = {"epochs": "epochs", "batch_size": "batch_size", "lr": "learning_rate", "resize": "resize_policy",
             "source_cues": "source_cues", "patience": "patience", "precise_bn": "precise_bn",
             "precise_bn_source": "precise_bn_source", "threshold_rule": "threshold_rule",
             "val_fraction": "val_fraction", "seed": "seed", "split_seed": "split_seed", "arch": "arch"}
    assert args.no_figure_validation is not fields["figure_validation"]
    assert {cli: getattr(args, cli) for cli in pairs} == {cli: fields[lib] for cli, lib in pairs.items()}
    # The literal choices of --precise-bn-source are the library's sources.
    for source in PRECISE_BN_SOURCES:
        chosen = build_parser().parse_args(["train", "--data", "x", "--precise-bn-source", source])
        assert chosen.precise_bn_source == source
    # So are --threshold-rule's, for train and calibrate; calibrate keeps the card's rule unless told.
    for rule in THRESHOLD_RULES:
        assert build_parser().parse_args(["train", "--data", "x", "--threshold-rule", rule]).threshold_rule == rule
        assert build_parser().parse_args(["calibrate", "--threshold-rule", rule]).threshold_rule == rule
        ensemble = build_parser().parse_args(["ensemble", "a", "--name", "b", "--threshold-rule", rule])
        assert ensemble.threshold_rule == rule
    assert build_parser().parse_args(["calibrate"]).threshold_rule is None


def test_calibrate_refits_what_training_fitted(tiny_model, tmp_path):
    """`calibrate` on a model whose card lost its fitted parts brings back the same ones."""
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    original = json.loads((model / "card.json").read_text())
    stripped = {**original, "temperature": 1.0, "covid_threshold": 0.5,
                "metrics": {k: v for k, v in original["metrics"].items()
                            if k not in ("calibration", "validation", "validation_figure_like")}}
    (model / "card.json").write_text(json.dumps(stripped))
    out = run_cli("calibrate", "--model", model)
    assert out.returncode == 0, out.stderr
    card = json.loads((model / "card.json").read_text())
    assert json.loads(out.stdout)["temperature"] == card["temperature"] == pytest.approx(original["temperature"])
    assert card["covid_threshold"] == pytest.approx(original["covid_threshold"])
    for key in ("validation", "validation_figure_like"):
        assert card["metrics"][key]["accuracy"] == pytest.approx(original["metrics"][key]["accuracy"])
    assert card["metrics"]["calibration"]["threshold_rule"] == "images"

    # Counting each validation group once: recorded, the image rule's threshold beside it, and kept by a refit.
    out = run_cli("calibrate", "--model", model, "--threshold-rule", "groups")
    assert out.returncode == 0, out.stderr
    by_groups = json.loads((model / "card.json").read_text())["metrics"]["calibration"]
    assert by_groups["threshold_rule"] == "groups"
    assert by_groups["covid_threshold_by_images"] == pytest.approx(original["covid_threshold"])
    assert by_groups["covid_group_weighted_sensitivity"] >= 0.95
    assert run_cli("calibrate", "--model", model).returncode == 0
    assert json.loads((model / "card.json").read_text())["metrics"]["calibration"]["threshold_rule"] == "groups"

    del stripped["training"]["data"]
    (model / "card.json").write_text(json.dumps(stripped))
    out = run_cli("calibrate", "--model", model)
    assert out.returncode == 2 and "does not record its training data" in out.stderr and "Traceback" not in out.stderr


def test_training_is_reproducible_from_its_seed(mini_data, tmp_path):
    """Same command, same seed: the same run, batch for batch (figure cues and augmentation
    included). Before the cues were drawn per file and visit, two runs differed from epoch 1."""
    histories = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = run_cli("train", "--data", mini_data, "--epochs", "2", "--image-size", "64", "--batch-size", "8",
                      "--precise-bn", "2", "--seed", seed, "--name", run, env={"CXR_MODEL_DIR": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        histories[run] = json.loads((tmp_path / run / "card.json").read_text())["training"]["history"]
    assert histories["a"] == histories["b"]
    assert histories["a"]["loss"] != histories["c"]["loss"]


def test_models_lists_and_delete_removes_a_saved_model_but_not_the_shipped_one(tiny_model, tmp_path):
    import shutil

    for name in ("kept", "spare"):
        shutil.copytree(tiny_model, tmp_path / name)
    (tmp_path / "DEFAULT").write_text("kept\n")
    env = {"CXR_MODEL_DIR": str(tmp_path)}
    listed = json.loads(run_cli("models", "--json", env=env).stdout)
    assert {(m["name"], m["active"], m["shipped"], m["members"]) for m in listed} == {
        ("kept", True, True, 1), ("spare", False, False, 1)}
    assert "kept, active, shipped: " in run_cli("models", env=env).stdout
    out = run_cli("delete", "spare", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"deleted": "spare"} and not (tmp_path / "spare").exists()
    assert [m["name"] for m in json.loads(run_cli("models", "--json", env=env).stdout)] == ["kept"]
    out = run_cli("delete", "kept", env=env)
    assert out.returncode == 2 and "shipped default" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "kept" / "model.keras").is_file()
    # A model the shipped one was averaged from is listed as such and kept too.
    shutil.copytree(tiny_model, tmp_path / "member")
    card = json.loads((tmp_path / "kept" / "card.json").read_text())
    card["training"]["ensemble_of"] = [{"name": "member"}]
    (tmp_path / "kept" / "card.json").write_text(json.dumps(card))
    listed = {m["name"]: m["shipped_member_of"] for m in json.loads(run_cli("models", "--json", env=env).stdout)}
    assert listed == {"kept": None, "member": "kept"}
    assert "member, shipped in kept: " in run_cli("models", env=env).stdout
    out = run_cli("delete", "member", env=env)
    assert out.returncode == 2 and "member of the shipped model kept" in out.stderr and "Traceback" not in out.stderr
