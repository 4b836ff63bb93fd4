"""Model architectures, selected by name.

Every model takes (S, S, 3) float32 pixels in 0..255 (see `cxr.preprocess.to_model_input`) and
normalises them itself, so a saved model cannot drift from its training-time preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from cxr.layers import FieldAverage, LungFieldMap, LungGate, PerImageEqualization, PerImageStandardization


def build_seed(image_size: int, num_classes: int) -> keras.Model:
    """The published "MaxPool CNN", layer for layer (1,448,257 parameters at 256 px, binary)."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, filters in enumerate((16, 64, 64, 128, 128)):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="fc")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _head(x, num_classes), name="seed")


GATE_LAYER = "lung_gate"  # the gated feature map of a lung-gated cxrnet


def build_cxrnet(image_size: int, num_classes: int, intensity: str = "standardize",
                 lung_gate: bool = False, fine_map: bool = False, atrous: bool = False,
                 detail: int | None = None) -> keras.Model:
    """The seed's conv stack made robust: per-image standardisation (or equalisation, see
    `INTENSITIES`), batch norm, global pooling.

    Global average pooling instead of Flatten+Dense(256) cuts 1.2M parameters that mostly
    memorised where things sit in the frame, and batch norm lets it train from scratch in few
    epochs on ~1k images.

    lung_gate: pool the final features over the lung fields only (`LungFieldMap`, a frozen copy of
    the shipped segmenter inside the model) instead of the whole box, so positions outside the
    lungs (the box's edges and corners, with letters, markers, the frame's cut) cannot carry the
    decision except through what lung positions see. Grad-CAM then reads the gated map
    (`cxr.saliency.default_cam_layer`).

    fine_map: the last stage runs at 1/16 of the input side (14x14 at 224 px) instead of 1/32, so
    Grad-CAM and the lung gate work on cells half as wide. Upsampled, a 7x7 cell smears heat on a
    lung's outer edge over the box's edge: heat spread evenly over the true lungs' 7x7 cells puts
    0.108 of it in the X-ray's outer frame, 0.068 at 14x14 (0.031 at full resolution). With the gate
    the lung fields are not grown: grown, the 14x14 field alone puts 0.115 there (models/README.md).

    atrous: the last stage at 1/16 of the side too, but as the plain network computed densely: pool3
    keeps stride 1 and the last stage's conv is dilated by 2, so with a plain cxrnet's weights every
    other cell is exactly that network's 7x7 map and the cells between are it on the box shifted by
    16 px. This is how a trained plain model is re-read over its lungs (`lung_gated_copy`).

    detail: blur the input to this side and back before anything else (`detail_cap`), so every source
    reaches the convolutions with at most that much detail. None: the input as it comes.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if intensity not in INTENSITIES:
        raise ValueError(f"unknown intensity normalisation {intensity!r}; choose one of {INTENSITIES}")
    first = PerImageEqualization if intensity == "equalize" else PerImageStandardization
    x = first(name=intensity)(detail_cap(inputs, image_size, detail))
    # A strided stem and an early pool put the 2-core CPU's work where the features are: at full
    # resolution a conv+batch-norm costs several times more and adds little for diffuse opacities.
    x = _conv_bn(x, 24, "stem", strides=2)
    x = layers.MaxPooling2D(2, name="pool0")(x)
    for stage, (filters, repeats) in enumerate(((48, 1), (96, 2), (128, 1), (128, 1)), start=1):
        dilation = 2 if atrous and stage == 4 else 1
        for r in range(repeats):
            x = _conv_bn(x, filters, f"s{stage}c{r + 1}", dilation=dilation)
        if stage == 3 and atrous:
            x = layers.MaxPooling2D(2, strides=1, padding="same", name="pool3")(x)  # every shift kept
        elif stage < (3 if fine_map or atrous else 4):
            x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    if lung_gate:
        field = LungFieldMap(x.shape[1], grow=1 if fine_map or atrous else None, name="lung_field")(inputs)
        gated = LungGate(name=GATE_LAYER)([x, field])
        x = FieldAverage(name="gap")([gated, field])  # "gap": the OOD gate reads the pooled features by name
    else:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    model = keras.Model(inputs, _head(x, num_classes), name="cxrnet")
    if lung_gate:
        from cxr.lungs import default_segmenter

        # Start from (and keep: the copy is frozen) the shipped segmenter's weights.
        model.get_layer("lung_field").segmenter.set_weights(default_segmenter().model.get_weights())
    return model


DETAIL_DOWN, DETAIL_UP = "detail_down", "detail_up"
MIN_DETAIL = 16  # px: below this a chest X-ray keeps too little to read (TrainConfig checks it too, before any work)


def detail_cap(x, image_size: int, detail: int | None):
    """`x` resized (antialiased) to `detail` px and back to `image_size`: a sharp original and a
    journal figure shrunk to a few hundred px then carry the same detail, so sharpness cannot mark
    the source (bench/resolution.py). Inside the model, so training, calibration, the probe,
    serving and saliency all see it. Weightless: it leaves `copy_weights` and `init_from` alone."""
    if detail is None:
        return x
    if not MIN_DETAIL <= detail < image_size:
        raise ValueError(f"detail must be between {MIN_DETAIL} and the input side {image_size} (exclusive), "
                         f"not {detail}")
    x = layers.Resizing(detail, detail, interpolation="bilinear", antialias=True, name=DETAIL_DOWN)(x)
    return layers.Resizing(image_size, image_size, interpolation="bilinear", name=DETAIL_UP)(x)


def detail_of(model: keras.Model, prefix: str = "") -> int | None:
    """The side `detail_cap` blurs a built model's input to (None: no cap); `prefix` as `lung_gated_copy`'s."""
    own = {layer.name.removeprefix(prefix): layer for layer in model.layers}
    return own[DETAIL_DOWN].get_config()["height"] if DETAIL_DOWN in own else None


def lung_gated_copy(trained: keras.Model, prefix: str = "") -> keras.Model:
    """A trained plain cxrnet re-read over its lung fields, without retraining: the same weights in an
    atrous, lung-gated cxrnet (`build_cxrnet(atrous=True, lung_gate=True)`), so its decision is pooled
    over the lung cells of a 14x14 map and Grad-CAM reads that gated map. Its own head is kept, so the
    probabilities shift (lung cells only, not the whole box, are averaged): refit temperature and
    threshold on validation. `prefix`: the member's layer prefix inside an ensemble (`cxr.ensemble.unpack`).
    """
    own = {layer.name.removeprefix(prefix): layer for layer in trained.layers}
    if GATE_LAYER in own or "s4c1_conv" not in own or "logits" not in own:
        raise ValueError(f"{trained.name} is not a plain cxrnet; only those can be re-read over the lungs")
    if own["s4c1_conv"].get_config()["dilation_rate"] != (1, 1) or "pool3" not in own:
        raise ValueError(f"{trained.name} already has a fine last stage")
    intensity = next(name for name in INTENSITIES if name in own)
    copy = build_cxrnet(trained.input_shape[1], own["logits"].get_config()["units"], intensity,
                        lung_gate=True, atrous=True, detail=detail_of(trained, prefix))
    copy_weights(copy, trained, prefix)
    return copy


def copy_weights(target: keras.Model, source: keras.Model, prefix: str = "") -> None:
    """Set every weighted layer of `target` from the layer of the same name in `source` (whose names
    carry `prefix`, as an ensemble member's do). ValueError if one is missing there or of another shape.
    A plain source may fill a lung-gated target: the frozen segmenter copy comes with the build."""
    own = {layer.name.removeprefix(prefix): layer for layer in source.layers}
    for layer in target.layers:
        if not layer.weights or (layer.name == "lung_field" and layer.name not in own):
            continue
        found = own.get(layer.name)
        if found is None:
            raise ValueError(f"its layer {layer.name!r} is missing there")
        weights = found.get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            raise ValueError(f"its layer {layer.name!r} is of another shape there")
        layer.set_weights(weights)


# How cxrnet normalises each image's grey levels: "standardize" removes linear changes (mean and
# contrast); "equalize" removes any monotone change (gamma, windowing), as another hospital's
# detector and processing give. The reference design ("seed") only rescales, as published.
INTENSITIES = ("standardize", "equalize")

ARCHITECTURES: dict[str, Callable[[int, int], keras.Model]] = {
    "seed": build_seed,
    "cxrnet": build_cxrnet,
}
# Input side each architecture was designed and measured at.
DEFAULT_IMAGE_SIZE = {"seed": 256, "cxrnet": 224}


def build_model(arch: str, num_classes: int, image_size: int | None = None, intensity: str = "standardize",
                lung_gate: bool = False, fine_map: bool = False, atrous: bool = False,
                detail: int | None = None) -> keras.Model:
    """Build architecture `arch`; num_classes=1 gives the binary sigmoid head."""
    try:
        builder = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}") from None
    if arch == "cxrnet":
        return builder(image_size or DEFAULT_IMAGE_SIZE[arch], num_classes, intensity, lung_gate, fine_map, atrous,
                       detail)
    if lung_gate or fine_map or atrous:
        raise ValueError(f"the {arch!r} architecture keeps its published head; "
                         "lung_gate, fine_map and atrous apply to cxrnet")
    if detail is not None:
        raise ValueError(f"the {arch!r} architecture keeps its published input; detail applies to cxrnet")
    if intensity != "standardize":
        raise ValueError(f"the {arch!r} architecture keeps its published rescaling; intensity applies to cxrnet")
    return builder(image_size or DEFAULT_IMAGE_SIZE[arch], num_classes)


def _conv_bn(x, filters: int, name: str, strides: int = 1, dilation: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, dilation_rate=dilation, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    # momentum 0.9 (not Keras' 0.99): with ~30 steps an epoch the slow moving averages lag the
    # weights by several epochs and make validation loss jump from epoch to epoch.
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _head(x, num_classes: int):
    # The activation is its own layer so saliency and temperature scaling can reach the logits.
    if num_classes == 1:
        logits = layers.Dense(1, name="logits")(x)
        return layers.Activation("sigmoid", name="probs")(logits)
    logits = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", name="probs")(logits)
