"""Saliency heatmaps with tf-keras-vis: Grad-CAM, Grad-CAM++, ScoreCAM and SmoothGrad.

An explainer is built once per model (it clones the model with a linear head, which costs a
few hundred ms) and then reused for every image.
"""

from __future__ import annotations

import numpy as np

# Method key -> label shown to users.
METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "ScoreCAM", "smoothgrad": "SmoothGrad"}

# The feature map each architecture's CAMs are taken from: the last conv block's activation
# (finest map that still sees the whole chest).
CAM_LAYER = {"seed": "conv5", "cxrnet": "s4c1_relu"}


class Explainer:
    """Heatmaps for one model. `heatmap(x, class_index, method)` -> (S, S) float32 in 0..1."""

    def __init__(self, model, arch: str, binary: bool = False):
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

        self.model = model
        self.binary = binary
        self.cam_layer = CAM_LAYER.get(arch, -1)
        self._modifier = ReplaceToLinear()  # scores on logits, not saturated probabilities
        self._methods: dict = {}

    def _method(self, name: str):
        if name not in METHODS:
            raise ValueError(f"unknown saliency method {name!r}; choose one of {list(METHODS)}")
        if name not in self._methods:
            from tf_keras_vis.gradcam import Gradcam
            from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
            from tf_keras_vis.saliency import Saliency
            from tf_keras_vis.scorecam import Scorecam

            cls = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam,
                   "smoothgrad": Saliency}[name]
            # ScoreCAM weighs maps by the (softmax) score itself, so it keeps the original head.
            modifier = None if name == "scorecam" else self._modifier
            self._methods[name] = cls(self.model, model_modifier=modifier, clone=True)
        return self._methods[name]

    def heatmap(self, x: np.ndarray, class_index: int, method: str = "gradcam") -> np.ndarray:
        """x: (1, S, S, 3) float32 model input; class_index in the model's class order."""
        from tf_keras_vis.utils.scores import BinaryScore, CategoricalScore

        explainer = self._method(method)
        if self.binary:
            score = BinaryScore(bool(class_index == 1))
        else:
            score = CategoricalScore([int(class_index)])
        x = np.asarray(x, np.float32)
        if method == "smoothgrad":
            # Noise sigma = 15 % of the image's own range; 20 samples is the usual quality/speed point.
            maps = explainer(score, x, smooth_samples=20, smooth_noise=0.15)
        elif method == "scorecam":
            maps = explainer(score, x, penultimate_layer=self.cam_layer, seek_penultimate_conv_layer=False,
                             max_N=16)
        else:
            maps = explainer(score, x, penultimate_layer=self.cam_layer, seek_penultimate_conv_layer=False)
        heat = np.nan_to_num(np.asarray(maps, np.float32)[0])
        lo, hi = float(heat.min()), float(heat.max())
        return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


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
