import json

import numpy as np
import pytest

from cxr.acquisition import CHANGES
from cxr.card import ModelCard
from cxr.predict import Predictor
from cxr.store import ModelStore
from cxr.templates import load_templates
from cxr.train import TrainConfig, class_weights, train


def test_class_weights_balance_classes():
    w = class_weights([0, 0, 0, 1], 2)
    assert w[0] * 3 == w[1] * 1 and np.mean([w[0]] * 3 + [w[1]]) == 1.0


def test_training_on_mini_set_lowers_the_loss_and_saves_a_complete_model(mini_data, tmp_path):
    seen = []
    store = ModelStore(tmp_path)
    config = TrainConfig(data=mini_data, epochs=4, image_size=96, batch_size=8, augment=False,
                         learning_rate=3e-3, patience=10, name="m1")
    saved = train(config, store, on_epoch_end=lambda epoch, logs: seen.append(logs), activate=True)
    losses = [logs["loss"] for logs in seen]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert store.active_name() == "m1"
    card = ModelCard.load(saved.path)
    assert card.classes == ["COVID19", "NORMAL", "PNEUMONIA"] and card.image_size == 96
    assert len(card.training["data"]["fingerprint"]) == 64
    assert card.training["data"]["n_train"] + card.training["data"]["n_validation"] == 24
    assert set(card.metrics["validation"]) >= {"accuracy", "macro_auroc", "confusion", "ece", "normal_below_threshold"}
    # The threshold's evidence is counted per patient/publication too (the mini manifest has group ids).
    calibration = card.metrics["calibration"]
    assert 1 <= calibration["covid_groups_found"] <= calibration["n_covid_validation_groups"]
    assert calibration["covid_largest_group"] <= calibration["n_covid_validation"]
    # Epochs were chosen on clean and figure-like validation together, and the card shows both.
    history = card.training["history"]
    assert card.training["selected_by"] == "val_select_loss"
    assert np.allclose(history["val_select_loss"], (np.array(history["val_loss"]) + history["val_figure_loss"]) / 2)
    assert card.training["best_epoch"] == int(np.argmin(history["val_select_loss"])) + 1
    assert card.metrics["validation_figure_like"]["n"] == card.metrics["validation"]["n"]
    # The validation X-rays stored as another hospital might, and the between-model figure built on them.
    acquisition = card.metrics["validation_acquisition"]
    assert set(acquisition["changes"]) == set(CHANGES)
    # A log-loss is stored to 4 decimals: on 4 validation images a confident model can round to 0.0.
    assert all(c["n"] == card.metrics["validation"]["n"] and np.isfinite(c["log_loss"]) and c["log_loss"] >= 0
               for c in acquisition["changes"].values())
    score = card.metrics["selection"]
    assert score["clean_log_loss"] == card.metrics["calibration"]["nll_after"]
    assert score["acquisition_log_loss"] == acquisition["mean_log_loss"]
    assert score["score"] == pytest.approx(np.mean([score["clean_log_loss"], score["figure_like_log_loss"],
                                                    score["acquisition_log_loss"]]), abs=1e-4)
    json.loads(card.to_json())
    templates = load_templates(saved.path / "templates")
    assert {c: n for c, (_, n) in templates.items()} == card.training["data"]["train_counts"]
    assert templates["NORMAL"][0].shape == (96, 96)
    probs = Predictor.from_path(saved.path).predict_proba([np.full((120, 100), 128, np.uint8)])
    assert probs.shape == (1, 3) and np.isclose(probs.sum(), 1)


def test_training_can_be_cancelled_and_still_saves_best_weights(mini_data, tmp_path):
    seen = []
    config = TrainConfig(data=mini_data, epochs=20, image_size=64, batch_size=8, name="stopped")
    saved = train(config, ModelStore(tmp_path), on_epoch_end=lambda e, logs: seen.append(e),
                  should_stop=lambda: len(seen) >= 1)
    assert len(seen) == 1 and saved.card.training["epochs_run"] == 1


def test_figure_validation_can_be_turned_off(mini_data, tmp_path):
    config = TrainConfig(data=mini_data, epochs=2, image_size=64, batch_size=8, name="plainsel",
                         figure_validation=False)
    card = train(config, ModelStore(tmp_path)).card
    assert card.training["selected_by"] == "val_loss" and "val_figure_loss" not in card.training["history"]
    assert "validation_figure_like" not in card.metrics


def test_binary_reference_head_predicts_covid_probability(mini_data, tmp_path):
    config = TrainConfig(data=mini_data, arch="seed", binary=True, classes=("COVID19", "NORMAL"),
                         epochs=1, image_size=96, batch_size=8, name="bin", resize_policy="stretch")
    saved = train(config, ModelStore(tmp_path))
    assert saved.card.binary and saved.card.classes == ["NORMAL", "COVID19"]
    probs = Predictor.from_path(saved.path).predict_proba([np.full((80, 80), 90, np.uint8)])
    assert probs.shape == (1, 2) and np.isclose(probs.sum(), 1)


def test_equalisation_is_refused_for_the_reference_design(mini_data):
    with pytest.raises(ValueError, match="cxrnet architecture only"):
        TrainConfig(data=mini_data, arch="seed", intensity="equalize")
    with pytest.raises(ValueError, match="intensity must be one of"):
        TrainConfig(data=mini_data, intensity="sharpen")


def test_detail_side_builds_the_cap_into_the_trained_model_and_is_checked(mini_data):
    """`--detail-side` reaches the model `train` compiles (cxr.model.detail_cap); a side the input
    cannot be blurred to, or the reference design, is refused before any work."""
    from cxr.cli import build_parser
    from cxr.model import detail_of
    from cxr.train import compiled_model

    assert build_parser().parse_args(["train", "--data", "x", "--detail-side", "112"]).detail_side == 112
    assert build_parser().parse_args(["train", "--data", "x"]).detail_side is None
    assert detail_of(compiled_model(TrainConfig(data=mini_data, image_size=64, detail_side=32), 3)) == 32
    assert detail_of(compiled_model(TrainConfig(data=mini_data, image_size=64), 3)) is None
    with pytest.raises(ValueError, match="cxrnet architecture only"):
        TrainConfig(data=mini_data, arch="seed", detail_side=128)
    # The card says so (an ensemble's card carries its first member's config).
    from cxr.card import ModelCard

    card = ModelCard(name="m", arch="cxrnet", classes=["A"], image_size=224, training={"config": {"detail_side": 112}})
    assert "blur to 112x112 and back, then intensity normalisation inside the model" in card.preprocessing
    assert "blur" not in ModelCard(name="m", arch="cxrnet", classes=["A"], image_size=224).preprocessing
    for side in (8, 64, 100):
        with pytest.raises(ValueError, match="detail_side must be between 16 and image_size 64"):
            TrainConfig(data=mini_data, image_size=64, detail_side=side)


def test_split_seed_holds_out_its_own_images_whatever_the_training_seed(mini_data, tmp_path):
    """Runs that differ in seed but share split_seed are validated on the same images (ensembles)."""
    from cxr.calibration import nll
    from cxr.data import load_imageset, split_train_val

    config = TrainConfig(data=mini_data, epochs=1, image_size=64, batch_size=8, seed=1, split_seed=0, name="shared")
    saved = train(config, ModelStore(tmp_path))
    assert config.validation_seed == 0 and saved.card.training["config"]["split_seed"] == 0
    images = load_imageset(mini_data, "train", saved.card.classes)
    held_out = {seed: split_train_val(images, config.val_fraction, seed)[1] for seed in (0, 1)}
    assert set(held_out[0].paths) != set(held_out[1].paths)  # else this test could not tell them apart
    predictor = Predictor.from_path(saved.path)
    losses = {seed: nll(*predictor.infer_imageset(held_out[seed])[:2]) for seed in (0, 1)}
    assert losses[0] == pytest.approx(saved.card.metrics["calibration"]["nll_after"], abs=1e-3)
    assert losses[1] != pytest.approx(losses[0], abs=1e-3)


def test_training_and_batch_prediction_read_a_folder_of_pacs_dicoms(mini_data, tmp_path):
    # A data scientist's PACS export of the mini set: every image a 12-bit MONOCHROME1 JPEG Lossless
    # DICOM, no manifest. tf.data decodes them from parallel threads through the one DICOM worker.
    from PIL import Image

    from cxr.data import load_imageset, lung_views
    from tests import factory

    data = tmp_path / "pacs"
    for src in sorted(mini_data.glob("*/*/*.jpg")):
        dst = data / src.parent.relative_to(mini_data) / f"{src.stem}.dcm"
        dst.parent.mkdir(parents=True, exist_ok=True)
        plain = factory.cr_film(np.asarray(Image.open(src).convert("L")))
        dst.write_bytes(factory.compressed_dicom(plain, "JPEGLosslessProcess14_1"))
    train_paths = load_imageset(data, "train").paths
    assert len(train_paths) == 24 and all(view is not None for view in lung_views(train_paths).values())
    saved = train(TrainConfig(data=data, epochs=1, image_size=64, batch_size=8, name="pacs"),
                  ModelStore(tmp_path / "store"))
    assert ModelCard.load(saved.path).training["data"]["n_train"] > 0
    tests = sorted(data.glob("test/*/*.dcm"))
    results = list(Predictor.from_path(saved.path).predict_stream(tests))
    assert len(results) == len(tests) > 0 and not any("error" in r for r in results)
