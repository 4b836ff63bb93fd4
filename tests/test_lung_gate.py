"""The lung-gated cxrnet: pooled over the lung fields a frozen segmenter copy finds inside the model."""

import numpy as np
import pytest

from cxr.errors import TrainingError
from cxr.layers import FieldAverage, LungGate
from cxr.lungs import default_segmenter, read_mask
from cxr.model import GATE_LAYER, build_model
from cxr.store import ModelStore, load_model
from cxr.train import TrainConfig, train
from tests.conftest import _dataset


def _segmenter_weights(model):
    return model.get_layer("lung_field").segmenter.get_weights()


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_pooled_features_ignore_cells_off_the_lungs():
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 3, (2, 7, 7, 5)).astype("float32")
    field = np.zeros((2, 7, 7, 1), "float32")
    field[:, 2:5, 1:6] = 1.0
    pooled = FieldAverage()([LungGate()([features, field]), field]).numpy()
    assert np.allclose(pooled, features[:, 2:5, 1:6].mean(axis=(1, 2)), atol=1e-3)
    # Anything off the lungs (letters, a frame's edge) changes nothing.
    features[:, 0] += 100.0
    features[:, :, 6] -= 50.0
    assert np.allclose(FieldAverage()([LungGate()([features, field]), field]).numpy(), pooled)


@pytest.mark.parametrize("fine_map, cells", [(False, 7), (True, 14)])
def test_field_follows_the_lungs_of_a_real_lung_box(fine_map, cells):
    """On lung boxes of X-rays with drawn lung masks, the cells the field covers are the lung cells."""
    from cxr.decode import decode_image
    from cxr.preprocess import crop_box, model_view, to_model_input

    root = _dataset("cxr-lungs") / "test"
    model = build_model("cxrnet", 3, 224, lung_gate=True, fine_map=fine_map)
    assert model.get_layer(GATE_LAYER).output.shape[1:3] == (cells, cells)
    for mask_path in sorted((root / "masks").glob("*.png"))[:3]:
        img = decode_image(next((root / "images").glob(mask_path.stem + ".*")))
        view, box = model_view(img, 224, "lungs")
        field = model.get_layer("lung_field")(to_model_input(view)).numpy()[0, ..., 0]
        truth = crop_box(read_mask(mask_path).astype(np.uint8) * 255, box, 224) >= 128
        side = 224 // cells
        lung_share = truth.reshape(cells, side, cells, side).mean(axis=(1, 3))
        assert field.shape == (cells, cells) and 0 <= field.min() and field.max() <= 1
        assert np.corrcoef(field.ravel(), lung_share.ravel())[0, 1] > 0.85
        # Cells with no lung in them (the top corners, the mediastinum, under the diaphragm) weigh little.
        assert field[lung_share == 0].mean() < 0.25 and field[lung_share > 0.5].mean() > 0.8


def test_gated_model_saves_loads_and_explains_from_the_gated_map(tmp_path):
    from cxr.card import ModelCard
    from cxr.saliency import Explainer

    model = build_model("cxrnet", 3, 96, lung_gate=True)
    assert _same(_segmenter_weights(model), default_segmenter().model.get_weights())
    folder = tmp_path / "gated"
    folder.mkdir()
    model.save(folder / "model.keras")
    ModelCard(name="gated", arch="cxrnet", classes=["A", "B", "C"], image_size=96).save(folder)
    loaded, _ = load_model(folder)  # safe mode: the custom layers are registered
    x = np.random.default_rng(1).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    assert np.allclose(model(x).numpy(), loaded(x).numpy(), atol=1e-6)
    explainer = Explainer(loaded, "cxrnet")
    assert explainer.cam_layer == GATE_LAYER
    assert explainer.heatmap(x[:1], 0, "gradcam").shape == (96, 96)
    assert Explainer(build_model("cxrnet", 3, 96), "cxrnet").cam_layer == "s4c1_relu"


def test_gate_is_refused_outside_cxrnet(mini_data):
    for option in ("lung_gate", "fine_map", "atrous"):
        with pytest.raises(ValueError, match="lung_gate, fine_map and atrous apply to cxrnet"):
            build_model("seed", 1, 64, **{option: True})
        with pytest.raises(ValueError, match="lung_gate, fine_map and atrous apply to the cxrnet"):
            TrainConfig(data=mini_data, arch="seed", **{option: True})


def test_training_leaves_the_segmenter_copy_as_shipped(mini_data, tmp_path):
    """Optimiser, weight decay and precise batch norm must not touch the frozen copy."""
    config = TrainConfig(data=mini_data, epochs=2, image_size=96, batch_size=8, lung_gate=True, name="g")
    saved = train(config, ModelStore(tmp_path))
    model, card = load_model(saved.path)
    assert card.training["config"]["lung_gate"] is True
    assert _same(_segmenter_weights(model), default_segmenter().model.get_weights())
    assert all("lung_field" not in w.path for w in model.trainable_weights)


def _randomised_bn(model, seed=0):
    """Batch-norm statistics away from their identity start, so the copy is checked on real arithmetic."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
    return model


def test_lung_gated_copy_keeps_the_trained_map_at_every_other_cell_and_explains_from_the_gate():
    """Re-read densely, the plain network's own 7x7 map is every other cell of the 14x14 one."""
    import keras

    from cxr.model import lung_gated_copy
    from cxr.saliency import Explainer

    plain = _randomised_bn(build_model("cxrnet", 3, 96))
    gated = lung_gated_copy(plain)
    x = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    coarse = keras.Model(plain.input, plain.get_layer("s4c1_relu").output)(x).numpy()
    dense = keras.Model(gated.input, gated.get_layer("s4c1_relu").output)(x).numpy()
    assert coarse.shape[1:3] == (3, 3) and dense.shape[1:3] == (6, 6)
    np.testing.assert_allclose(dense[:, ::2, ::2], coarse, atol=1e-5)
    assert not np.allclose(dense[:, 1::2, 1::2], coarse, atol=1e-3)  # the cells between are new shifts
    assert _same(gated.get_layer("logits").get_weights(), plain.get_layer("logits").get_weights())
    assert _same(_segmenter_weights(gated), default_segmenter().model.get_weights())
    assert Explainer(gated, "cxrnet").cam_layer == GATE_LAYER


@pytest.mark.parametrize("kind", ["gated", "fine", "seed"])
def test_lung_gated_copy_refuses_models_it_cannot_re_read(kind):
    from cxr.model import lung_gated_copy

    model = {"gated": lambda: build_model("cxrnet", 3, 96, lung_gate=True),
             "fine": lambda: build_model("cxrnet", 3, 96, fine_map=True),
             "seed": lambda: build_model("seed", 3, 128)}[kind]()
    with pytest.raises(ValueError, match="plain cxrnet|fine last stage"):
        lung_gated_copy(model)


def test_lung_gate_command_saves_a_refitted_gated_model_and_refuses_one_already_gated(tiny_model, mini_data,
                                                                                     tmp_path):
    import json
    import shutil

    from cxr.predict import Predictor
    from tests.test_cli import run_cli

    store = tmp_path / "models"
    shutil.copytree(tiny_model, store / "tiny")
    source = json.loads((store / "tiny" / "card.json").read_text())
    source["metrics"]["calibration"]["threshold_rule"] = "groups"  # as if calibrated --threshold-rule groups
    (store / "tiny" / "card.json").write_text(json.dumps(source))
    env = {"CXR_MODEL_DIR": str(store)}
    out = run_cli("lung-gate", "tiny", "--name", "tiny-gated", env=env)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    card = json.loads((store / "tiny-gated" / "card.json").read_text())
    assert printed["lung_gated_from"] == card["training"]["lung_gated_from"] == "tiny"
    assert card["training"]["config"]["lung_gate"] and card["training"]["config"]["atrous"]
    assert card["metrics"]["calibration"]["fitted_on"] == "validation"
    assert card["metrics"]["calibration"]["threshold_rule"] == "groups"  # the source's rule
    assert card["covid_threshold"] == printed["covid_threshold"]
    predictor = Predictor.from_path(store / "tiny-gated")
    assert GATE_LAYER in {layer.name for layer in predictor.model.layers}
    result = predictor.predict_file(sorted((mini_data / "test" / "COVID19").glob("*"))[0])
    # Each probability is rounded to 6 places, so three may sum to 1 +- 1.5e-6 (as in test_cli).
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-4) and result["ood"] in (True, False)
    again = run_cli("lung-gate", "tiny-gated", "--name", "twice", env=env)
    assert again.returncode == 2 and "Traceback" not in again.stderr and "plain cxrnet" in again.stderr
    assert not (store / "twice").exists()


def test_lung_gated_model_refuses_a_saved_model_of_another_architecture_with_a_typed_error(tmp_path):
    from cxr.card import ModelCard
    from cxr.errors import ModelError
    from cxr.regate import lung_gated_model

    folder = tmp_path / "seed"
    folder.mkdir()
    build_model("seed", 3, 128).save(folder / "model.keras")
    ModelCard(name="seed", arch="seed", classes=["A", "B", "C"], image_size=128).save(folder)
    with pytest.raises(ModelError, match="not a cxrnet"):
        lung_gated_model(folder, "gated")


def _saved(model, folder, image_size=96):
    from cxr.card import ModelCard

    folder.mkdir()
    model.save(folder / "model.keras")
    ModelCard(name=folder.name, arch="cxrnet", classes=["A", "B", "C"], image_size=image_size).save(folder)
    return folder


def _weights_equal(a, b):
    return _same(a.get_weights(), b.get_weights())


def test_training_can_start_from_a_saved_model_or_one_member_of_a_saved_ensemble(tmp_path, mini_data):
    """`--init-from`: what `lung-gate` made of trained members can train on, each member on its own."""
    from cxr.ensemble import build_ensemble
    from cxr.model import detail_of, lung_gated_copy
    from cxr.train import compiled_model, start_from

    plain = _randomised_bn(build_model("cxrnet", 3, 96), seed=1)
    config = TrainConfig(data=mini_data, image_size=96, init_from=str(_saved(plain, tmp_path / "plain")))
    assert _weights_equal(compiled_model(config, 3), plain)  # the path `train` takes

    members = [lung_gated_copy(plain), lung_gated_copy(_randomised_bn(build_model("cxrnet", 3, 96), seed=2))]
    folder = _saved(build_ensemble(members, [1.0, 1.5]), tmp_path / "gated-pair")
    fresh = build_model("cxrnet", 3, 96, lung_gate=True, atrous=True)
    start_from(fresh, folder, member=1)
    assert _weights_equal(fresh, members[1]) and not _weights_equal(fresh, members[0])
    with pytest.raises(TrainingError, match="say which member"):
        start_from(fresh, folder)
    with pytest.raises(TrainingError, match="no member 2"):
        start_from(fresh, folder, member=2)
    # A plain model starts a lung-gated one (what lung-gate does, then training); the segmenter copy
    # is the shipped one. A model of another shape cannot start from it.
    gated = build_model("cxrnet", 3, 96, lung_gate=True, atrous=True)
    start_from(gated, tmp_path / "plain")
    assert _weights_equal(gated, lung_gated_copy(plain))
    # The detail cap is weightless: a capped copy starts from the same weights and stays capped.
    capped = build_model("cxrnet", 3, 96, lung_gate=True, atrous=True, detail=48)
    start_from(capped, tmp_path / "plain")
    assert _weights_equal(capped, gated)
    assert detail_of(lung_gated_copy(build_model("cxrnet", 3, 96, detail=48))) == 48
    with pytest.raises(TrainingError, match="'logits' is of another shape"):
        start_from(build_model("cxrnet", 2, 96), tmp_path / "plain")
    with pytest.raises(TrainingError, match="missing"):
        start_from(build_model("seed", 3, 128), tmp_path / "plain")


@pytest.mark.parametrize("settings, message", [
    ({"fine_map": True, "atrous": True}, "choose one"),
    ({"init_member": 0}, "init_member picks"),
])
def test_train_config_refuses_contradictory_starts(settings, message, mini_data):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data=mini_data, **settings)
