"""Saliency heatmaps with tf-keras-vis: Grad-CAM, Grad-CAM++, ScoreCAM and SmoothGrad.

An explainer is built once per model (it clones the model with a linear head, which costs a
few hundred ms) and then reused for every image.
"""

from __future__ import annotations

import numpy as np

# Method key -> label shown to users.
METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "ScoreCAM", "smoothgrad": "SmoothGrad"}

# The feature map each architecture's CAMs are taken from: the last conv block's activation
# (finest map that still sees the whole chest). A lung-gated cxrnet pools its gated map
# (`cxr.model.GATE_LAYER`), so its CAMs read that one.
CAM_LAYER = {"seed": "conv5", "cxrnet": "s4c1_relu"}


class Explainer:
    """Heatmaps for one model. `heatmap(x, class_index, method)` -> (S, S) float32 in 0..1."""

    def __init__(self, model, arch: str, binary: bool = False, cam_layer: str | None = None):
        """cam_layer: the feature map the CAM methods read; None = the architecture's (`CAM_LAYER`),
        or for an ensemble (cxr.ensemble) each member's."""
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

        self.model = model
        self.binary = binary
        self.cam_layer = cam_layer or default_cam_layer(model, arch)
        if cam_layer is not None:
            model.get_layer(cam_layer)  # an unknown name fails here (ValueError), not mid-explanation
        self._cam_layers = self.cam_layer if isinstance(self.cam_layer, tuple) else (self.cam_layer,)
        self._modifier = ReplaceToLinear()  # scores on logits, not saturated probabilities
        self._methods: dict = {}
        self._scores: dict = {}

    def _method(self, name: str):
        if name not in METHODS:
            raise ValueError(f"unknown saliency method {name!r}; choose one of {list(METHODS)}")
        if name not in self._methods:
            from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
            from tf_keras_vis.saliency import Saliency
            from tf_keras_vis.scorecam import Scorecam

            if name == "gradcam":
                self._methods[name] = compiled_gradcam(self.model, self._modifier, self._cam_layers)
                return self._methods[name]
            cls = {"gradcam++": GradcamPlusPlus, "scorecam": Scorecam, "smoothgrad": Saliency}[name]
            # ScoreCAM weighs maps by the (softmax) score itself, so it keeps the original head.
            modifier = None if name == "scorecam" else self._modifier
            self._methods[name] = cls(self.model, model_modifier=modifier, clone=True)
        return self._methods[name]

    def map_side(self, method: str = "gradcam") -> int:
        """Side of the grid a method computes its heat on before zooming it to the input: the CAM
        layer's for the CAM methods, the input's for SmoothGrad (input gradients)."""
        if method == "smoothgrad":
            return int(self.model.input_shape[1])
        return int(_layer(self.model, self._cam_layers[0]).output.shape[1])

    def heatmap(self, x: np.ndarray, class_index: int, method: str = "gradcam") -> np.ndarray:
        """x: (1, S, S, 3) float32 model input; class_index in the model's class order."""
        from tf_keras_vis.utils.scores import BinaryScore, CategoricalScore

        explainer = self._method(method)
        # One score object per class, reused: the compiled Grad-CAM traces once per score object.
        if class_index not in self._scores:
            self._scores[class_index] = (BinaryScore(bool(class_index == 1)) if self.binary
                                         else CategoricalScore([int(class_index)]))
        score = self._scores[class_index]
        x = np.asarray(x, np.float32)
        if method == "gradcam":
            maps = explainer(score, x)
        elif method == "smoothgrad":
            # Noise sigma = 15 % of the image's own range; 20 samples is the usual quality/speed point.
            maps = explainer(score, x, smooth_samples=20, smooth_noise=0.15)
        else:
            # One map per CAM layer (an ensemble's members), each normalised, averaged.
            extra = {"max_N": 16} if method == "scorecam" else {}
            maps = np.mean([_normalised(np.asarray(explainer(score, x, penultimate_layer=layer,
                                                              seek_penultimate_conv_layer=False, **extra))[0])
                            for layer in self._cam_layers], axis=0)[None]
        return _normalised(np.asarray(maps, np.float32)[0])


def _normalised(heat: np.ndarray) -> np.ndarray:
    heat = np.nan_to_num(np.asarray(heat, np.float32))
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def _layer(model, layer: str | int):
    return model.get_layer(layer) if isinstance(layer, str) else model.layers[layer]


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) in 0..1 -> (H, W, 3) uint8 with a perceptually ordered blue-to-red 'jet' map."""
    h = np.clip(np.asarray(heatmap, np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * h - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * h - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * h - 1), 0, 1)
    return np.round(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(img: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend a (S, S) 0..1 heatmap over a (S, S) uint8 grey image -> (S, S, 3) uint8.

    Opacity scales with the heat itself, so cold regions show the X-ray unobscured.
    """
    if img.shape != heatmap.shape:
        raise ValueError(f"image {img.shape} and heatmap {heatmap.shape} differ in shape")
    grey = np.repeat(img[..., None].astype(np.float32), 3, axis=-1)
    alpha = float(np.clip(opacity, 0.0, 1.0)) * np.clip(heatmap, 0, 1)[..., None] ** 0.5
    return np.round(grey * (1 - alpha) + colorize(heatmap) * alpha).astype(np.uint8)


def default_cam_layer(model, arch: str) -> str | int | tuple[str, ...]:
    """The layer CAMs read by default: the gated map if the model has one, else the architecture's;
    for an ensemble, every member's copy of it."""
    from cxr.ensemble import member_layers
    from cxr.model import GATE_LAYER

    names = {layer.name for layer in model.layers}
    for name in (GATE_LAYER, CAM_LAYER.get(arch)):
        members = member_layers(model, name) if name else ()
        if members and all(m in names for m in members):
            return members
        if name == GATE_LAYER and name in names:
            return GATE_LAYER
    return CAM_LAYER.get(arch, -1)


def compiled_gradcam(model, model_modifier, cam_layers: tuple[str | int, ...]):
    """tf-keras-vis Grad-CAM with its forward and backward pass compiled once per model.

    Gradcam.__call__ rebuilds its two-output model and runs it eagerly on every call, which costs
    ~10x the compiled pass on a CPU. This subclass builds that model once and compiles the tape;
    the scores, the CAM weighting (Gradcam._calculate_cam), the ReLU, the zoom and the
    normalisation stay the library's. Several layers (an ensemble's members, maps of one size):
    each member's weighted map is summed before the ReLU, which is Grad-CAM of the ensemble's
    score on all its members' channels at once.
    """
    import keras
    import tensorflow as tf
    from scipy.ndimage import zoom
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils import normalize, zoom_factor

    class CompiledGradcam(Gradcam):
        def __init__(self):
            super().__init__(model, model_modifier=model_modifier, clone=True)
            maps = [_layer(self.model, layer).output for layer in cam_layers]
            if len({tuple(m.shape[1:3]) for m in maps}) > 1:
                raise ValueError(f"the CAM layers {cam_layers} differ in size")
            cam_model = keras.Model(self.model.inputs, [self.model.outputs[0], *maps])

            @tf.function(reduce_retracing=True)
            def grads_and_maps(x, score):
                with tf.GradientTape() as tape:
                    output, *feature_maps = cam_model(x, training=False)
                    score_values = score(output)
                return tape.gradient(score_values, feature_maps), feature_maps

            self._grads_and_maps = grads_and_maps

        def __call__(self, score, seed_input, **_ignored):
            grads, feature_maps = self._grads_and_maps(tf.convert_to_tensor(seed_input), score)
            cam = np.maximum(np.sum([np.asarray(self._calculate_cam(g, f, None, None))
                                     for g, f in zip(grads, feature_maps, strict=True)], axis=0), 0)
            cam = zoom(cam, zoom_factor(cam.shape, seed_input.shape), order=1)
            return normalize(cam)

    return CompiledGradcam()
