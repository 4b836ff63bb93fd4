"""Ensembles (cxr.ensemble): the averaged output, its Grad-CAM and gate, and the `ensemble` command."""

import json
import shutil

import keras
import numpy as np
import pytest

from cxr.ensemble import EnsembleError, build_ensemble, check_members, member_count, unpack
from cxr.model import build_model
from cxr.ood import feature_layers
from cxr.saliency import Explainer
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def members():
    keras.utils.set_random_seed(0)
    return [build_model("cxrnet", 3, 64) for _ in range(3)]


def test_ensemble_output_is_the_softmax_of_the_members_mean_log_probability(members, tmp_path):
    ensemble = build_ensemble(members)
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    mean_log = np.mean([np.log(m(x).numpy()) for m in members], axis=0)
    expected = np.exp(mean_log) / np.exp(mean_log).sum(axis=1, keepdims=True)
    assert member_count(ensemble) == 3 and member_count(members[0]) == 0
    np.testing.assert_allclose(ensemble(x).numpy(), expected, atol=1e-5)
    ensemble.save(tmp_path / "e.keras")  # a plain functional model: safe-mode loading rebuilds it
    reloaded = keras.saving.load_model(tmp_path / "e.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(reloaded(x).numpy(), ensemble(x).numpy(), atol=1e-6)


def test_each_member_is_averaged_at_its_own_temperature(members):
    temperatures = [2.0, 1.0, 0.5]
    x = np.random.default_rng(3).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    mean_log = np.mean([np.log(m(x).numpy()) / t for m, t in zip(members, temperatures, strict=True)], axis=0)
    expected = np.exp(mean_log) / np.exp(mean_log).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(build_ensemble(members, temperatures)(x).numpy(), expected, atol=1e-5)


def test_gradcam_of_a_model_averaged_with_itself_is_that_models_gradcam(members):
    single = Explainer(members[0], "cxrnet")
    twice = Explainer(build_ensemble([members[0], members[0]]), "cxrnet")
    assert twice.cam_layer == ("m0_s4c1_relu", "m1_s4c1_relu")
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    for class_index in (0, 2):
        np.testing.assert_allclose(twice.heatmap(x, class_index), single.heatmap(x, class_index), atol=1e-4)


def test_a_saved_ensemble_plus_a_model_is_the_ensemble_of_all_its_members(members, tmp_path):
    first, second, third = members
    pair = build_ensemble([first, second], [2.0, 1.0])
    pair.save(tmp_path / "pair.keras")
    pair = keras.saving.load_model(tmp_path / "pair.keras", compile=False, safe_mode=True)
    parts = unpack(pair, temperature=0.8) + unpack(third, temperature=0.5)  # the pair's own T is refitted
    assert [(t, prefix) for _, t, prefix in parts] == [(pytest.approx(2.0), "m0_"), (pytest.approx(1.0), "m1_"),
                                                       (0.5, "")]
    grown = build_ensemble(*(list(column) for column in zip(*parts, strict=True)))
    direct = build_ensemble(members, [2.0, 1.0, 0.5])
    x = np.random.default_rng(4).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(grown(x).numpy(), direct(x).numpy(), atol=1e-5)
    assert member_count(grown) == 3 and sorted(layer.name for layer in grown.layers) == sorted(
        layer.name for layer in direct.layers)  # m2_..., never m0_m1_...
    assert Explainer(grown, "cxrnet").cam_layer == ("m0_s4c1_relu", "m1_s4c1_relu", "m2_s4c1_relu")


def test_ensemble_gate_reads_the_first_members_features(members):
    assert feature_layers(build_ensemble(members)) == tuple("m0_" + n for n in feature_layers(members[0]))


def test_members_must_share_classes_and_validation_split(tiny_model):
    from cxr.card import ModelCard

    card = ModelCard.load(tiny_model)
    check_members([card, card])
    other = ModelCard.load(tiny_model)
    other.training["config"]["split_seed"] = 5
    with pytest.raises(EnsembleError, match="same validation images"):
        check_members([card, other])
    other = ModelCard.load(tiny_model)
    other.classes = list(reversed(other.classes))
    with pytest.raises(EnsembleError, match="classes"):
        check_members([card, other])
    with pytest.raises(EnsembleError, match="at least two"):
        check_members([card])


def test_ensemble_command_saves_a_calibrated_gated_model_that_serves_like_its_members(tiny_model, tmp_path):
    from cxr.predict import Predictor

    store = tmp_path / "store"
    out = run_cli("ensemble", tiny_model, tiny_model, "--name", "twice", env={"CXR_MODEL_DIR": str(store)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["members"] == ["tiny", "tiny"]
    twice, tiny = Predictor.from_path(store / "twice"), Predictor.from_path(tiny_model)
    assert twice.card.training["ensemble_of"][0]["name"] == "tiny" and twice.gate is not None
    assert twice.card.covid_threshold == pytest.approx(tiny.card.covid_threshold, abs=1e-3)
    assert (store / "twice" / "templates").is_dir()
    img = np.random.default_rng(2).integers(40, 200, (120, 100), dtype=np.uint8)
    np.testing.assert_allclose(twice.predict_proba([img]), tiny.predict_proba([img]), atol=1e-3)
    # A saved ensemble can take one more member; the card lists the members, not the ensemble.
    # Its threshold rule is the members' (both 'images') unless asked for another.
    assert twice.card.metrics["calibration"]["threshold_rule"] == "images"
    out = run_cli("ensemble", "twice", tiny_model, "--name", "thrice", "--threshold-rule", "groups",
                  env={"CXR_MODEL_DIR": str(store)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["members"] == ["tiny", "tiny", "tiny"]
    thrice = Predictor.from_path(store / "thrice")
    assert thrice.card.metrics["calibration"]["threshold_rule"] == "groups"
    np.testing.assert_allclose(thrice.predict_proba([img]), tiny.predict_proba([img]), atol=1e-3)


def test_ensemble_command_refuses_members_with_another_split_and_saves_nothing(tiny_model, tmp_path):
    from cxr.card import ModelCard

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    card = ModelCard.load(other)
    card.training["config"]["seed"] += 1
    card.save(other)
    store = tmp_path / "store"
    out = run_cli("ensemble", tiny_model, other, "--name", "mixed", env={"CXR_MODEL_DIR": str(store)})
    assert out.returncode == 2 and "same validation images" in out.stderr and "Traceback" not in out.stderr
    assert not (store / "mixed").exists()
