"""One shared test over every saliency method (as tf-keras-vis tests its own methods)."""

import numpy as np
import pytest

from cxr.model import build_model
from cxr.saliency import METHODS, Explainer, colorize, overlay


@pytest.fixture(scope="module", params=["cxrnet", "seed", "ensemble", "capped"])
def explainer(request):
    if request.param == "capped":  # the input blurred inside the model (cxr.model.detail_cap): gradients pass it
        return Explainer(build_model("cxrnet", 3, 96, detail=48), "cxrnet")
    if request.param == "ensemble":  # two cxrnets averaged (cxr.ensemble): CAMs read both members
        from cxr.ensemble import build_ensemble

        return Explainer(build_ensemble([build_model("cxrnet", 3, 96) for _ in range(2)]), "cxrnet")
    model = build_model(request.param, 3, 96)
    return Explainer(model, request.param)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_a_normalised_heatmap_at_input_size(explainer, method):
    x = np.random.default_rng(0).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    heat = explainer.heatmap(x, class_index=2, method=method)
    assert heat.shape == (96, 96) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1


def test_unknown_method_is_refused(explainer):
    with pytest.raises(ValueError, match="unknown saliency method"):
        explainer.heatmap(np.zeros((1, 96, 96, 3), "float32"), 0, "lime")


def test_binary_model_explains_both_classes():
    explainer = Explainer(build_model("seed", 1, 96), "seed", binary=True)
    x = np.random.default_rng(1).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    for class_index in (0, 1):
        assert explainer.heatmap(x, class_index).shape == (96, 96)


def test_colorize_runs_blue_to_red():
    rgb = colorize(np.array([[0.0, 1.0]]))
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[0, 1, 0] > rgb[0, 1, 2]


def test_overlay_leaves_cold_pixels_untouched_and_respects_opacity():
    img = np.full((4, 4), 100, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    out = overlay(img, heat, opacity=0.5)
    assert out.shape == (4, 4, 3) and (out[1:, 1:] == 100).all()
    assert not (out[0, 0] == 100).all()
    assert (overlay(img, heat, opacity=0.0) == 100).all()


@pytest.mark.parametrize("arch", ["cxrnet", "seed"])
def test_compiled_gradcam_matches_tf_keras_vis_gradcam(arch):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    from cxr.saliency import CAM_LAYER

    model = build_model(arch, 3, 96)
    x = np.random.default_rng(3).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    reference = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)(
        CategoricalScore([1]), x, penultimate_layer=CAM_LAYER[arch], seek_penultimate_conv_layer=False)[0]
    ours = Explainer(model, arch).heatmap(x, 1, "gradcam")
    ref = (reference - reference.min()) / max(reference.max() - reference.min(), 1e-9)
    assert np.abs(ours - ref).max() < 1e-3


def test_cam_methods_can_read_a_finer_layer():
    model = build_model("cxrnet", 3, 96)
    x = np.random.default_rng(2).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    finer = Explainer(model, "cxrnet", cam_layer="s2c2_relu")
    assert finer.cam_layer == "s2c2_relu" and finer.heatmap(x, 0, "gradcam").shape == (96, 96)
    with pytest.raises(ValueError):
        Explainer(model, "cxrnet", cam_layer="no_such_layer")


def test_input_gradients_pass_the_detail_cap():
    """SmoothGrad differentiates through the blur inside a capped model: its map is not empty."""
    explainer = Explainer(build_model("cxrnet", 3, 96, detail=48), "cxrnet")
    x = np.random.default_rng(1).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    assert explainer.heatmap(x, class_index=0, method="smoothgrad").max() == pytest.approx(1.0)
