import keras
import numpy as np
import pytest

from cxr.card import ModelCard
from cxr.errors import ModelError
from cxr.model import ARCHITECTURES, build_model
from cxr.store import MODEL_FILE, load_model


def test_seed_binary_has_the_published_parameter_count():
    model = build_model("seed", 1, 256)
    assert model.count_params() == 1_448_257
    assert model.input_shape == (None, 256, 256, 3)
    assert model.output_shape == (None, 1)


def test_seed_three_class_head():
    assert build_model("seed", 3).output_shape == (None, 3)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_outputs_probabilities(arch):
    model = build_model(arch, 3, 96)
    probs = model(np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")).numpy()
    assert probs.shape == (2, 3)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet9000", 3)


def test_cxrnet_is_invariant_to_exposure_and_bit_depth():
    # Per-image standardisation: an affine change of intensities does not change the output.
    model = build_model("cxrnet", 3, 64)
    x = np.random.default_rng(1).uniform(20, 200, (1, 64, 64, 3)).astype("float32")
    assert np.allclose(model(x).numpy(), model(0.5 * x + 30).numpy(), atol=1e-4)


def test_equalising_cxrnet_is_invariant_to_any_exposure_curve():
    # Equalisation: gamma (a monotone, non-linear change) leaves the input the same, as it does
    # not under standardisation. Rounded to 8 bits, as a real X-ray file is.
    rng = np.random.default_rng(3)
    img = np.round(rng.uniform(1, 255, (1, 64, 64, 1))).astype("float32").repeat(3, axis=-1)
    darker = np.round(255 * (img / 255) ** 1.6)
    equalize, standardize = build_model("cxrnet", 3, 64, "equalize"), build_model("cxrnet", 3, 64)
    first = lambda m, x: m.get_layer(index=1)(x).numpy()  # noqa: E731
    assert np.abs(first(equalize, img) - first(equalize, darker)).mean() < 0.02
    assert np.abs(first(standardize, img) - first(standardize, darker)).mean() > 0.05
    out = first(equalize, img)
    assert abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.05  # centred and scaled like the standardised input


def test_equalisation_keeps_black_black_and_passes_gradients():
    import tensorflow as tf

    from cxr.layers import PerImageEqualization

    x = np.random.default_rng(4).uniform(50, 250, (1, 32, 32, 3)).astype("float32")
    x[:, :8] = 0  # a rotated scan's black corner
    layer = PerImageEqualization()
    out = layer(x).numpy()
    assert np.allclose(out[:, :8], out.min()) and out[:, 8:].min() > out.min()
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        total = tf.reduce_sum(layer(tensor)[:, 16:24, 16:24])
    grad = tape.gradient(total, tensor).numpy()
    assert np.isfinite(grad).all() and np.abs(grad[:, 16:24, 16:24]).sum() > 0  # SmoothGrad needs these


def test_intensity_applies_to_cxrnet_only():
    with pytest.raises(ValueError, match="intensity applies to cxrnet"):
        build_model("seed", 1, 64, "equalize")
    with pytest.raises(ValueError, match="unknown intensity"):
        build_model("cxrnet", 3, 64, "sharpen")


def _save(model, folder, card=None):
    folder.mkdir()
    model.save(folder / MODEL_FILE)
    (card or ModelCard(name=folder.name, arch="cxrnet", classes=["A", "B", "C"], image_size=64)).save(folder)
    return folder


@pytest.mark.parametrize("intensity", ["standardize", "equalize"])
def test_saved_cxrnet_loads_in_safe_mode_with_identical_outputs(tmp_path, intensity):
    model = build_model("cxrnet", 3, 64, intensity)
    folder = _save(model, tmp_path / "m")
    loaded, card = load_model(folder)
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    assert np.allclose(model(x).numpy(), loaded(x).numpy(), atol=1e-6)
    assert card.classes == ["A", "B", "C"]


def test_model_with_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    folder = _save(model, tmp_path / "evil")
    with pytest.raises(ModelError, match="executable code"):
        load_model(folder)


def test_corrupt_model_file_gives_model_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(b"not a zip")
    ModelCard(name="broken", arch="cxrnet", classes=["A", "B"], image_size=64).save(folder)
    with pytest.raises(ModelError, match="could not be loaded"):
        load_model(folder)


def test_flops_counted_from_layer_shapes():
    from cxr.flops import model_flops

    flops = model_flops(build_model("seed", 1, 256))
    # conv1: 254 x 254 outputs x 16 filters x (3 x 3 x 3) multiply-adds x 2
    assert flops["conv1"] == 2 * 254 * 254 * 16 * 27
    assert flops["fc"] == 2 * (6 * 6 * 128) * 256 and flops["logits"] == 2 * 256
    assert set(flops) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc", "logits"}
    cxrnet = model_flops(build_model("cxrnet", 3, 224))
    assert cxrnet["stem_conv"] == 2 * 112 * 112 * 24 * 27  # stride 2, 'same' padding
    assert 0.3e9 < sum(cxrnet.values()) < 0.4e9


def test_fine_map_keeps_the_last_stage_at_a_sixteenth_of_the_side():
    from cxr.saliency import Explainer

    coarse, fine = build_model("cxrnet", 3, 96), build_model("cxrnet", 3, 96, fine_map=True)
    assert coarse.get_layer("s4c1_relu").output.shape[1:3] == (3, 3)
    assert fine.get_layer("s4c1_relu").output.shape[1:3] == (6, 6)
    assert fine.count_params() == coarse.count_params()  # same weights, a finer grid
    x = np.random.default_rng(2).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    assert Explainer(fine, "cxrnet").heatmap(x, 0, "gradcam").shape == (96, 96)


def test_detail_cap_blurs_fine_detail_keeps_coarse_and_saves(tmp_path):
    """`detail`: the input blurred to that side and back inside the model, before anything learns."""
    from cxr.model import DETAIL_DOWN, DETAIL_UP, detail_cap, detail_of

    capped = build_model("cxrnet", 3, 64, detail=32)
    plain = build_model("cxrnet", 3, 64)
    assert detail_of(capped) == 32 and detail_of(plain) is None
    # Weightless: the capped model has exactly the plain one's weights, in the same order.
    assert [w.shape for w in capped.weights] == [w.shape for w in plain.weights]
    assert not capped.get_layer(DETAIL_DOWN).weights and not capped.get_layer(DETAIL_UP).weights

    inputs = keras.Input((64, 64, 3))
    cap = keras.Model(inputs, detail_cap(inputs, 64, 32))
    yy, xx = np.mgrid[:64, :64]
    checker = np.repeat((((yy + xx) % 2) * 255.0)[None, ..., None], 3, axis=-1).astype("float32")  # finest detail
    halves = np.repeat(((xx >= 32) * 255.0)[None, ..., None], 3, axis=-1).astype("float32")  # coarse
    assert np.abs(cap(checker).numpy() - 127.5).max() < 5  # the pixel-wide checker becomes grey
    assert np.abs(cap(halves).numpy() - halves)[..., :28, :].max() < 1  # away from the edge, unchanged

    folder = _save(capped, tmp_path / "capped")
    loaded, _ = load_model(folder)
    x = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    assert detail_of(loaded) == 32 and np.allclose(capped(x).numpy(), loaded(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("arch, detail, message", [
    ("cxrnet", 64, "between 16 and the input side 64"),
    ("cxrnet", 8, "between 16"),
    ("seed", 32, "detail applies to cxrnet"),
])
def test_detail_cap_out_of_range_or_on_the_seed_is_refused(arch, detail, message):
    with pytest.raises(ValueError, match=message):
        build_model(arch, 3, 64, detail=detail)
