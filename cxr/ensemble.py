"""Several trained models averaged into one: saved, served, explained and gated like any model.

Why: trained on two CPU cores from ~90 COVID-19 images, one model's ranking and its validation
threshold swing from seed to seed; the average of models that held out the same images ranks
better and can still be calibrated and thresholded honestly on those images (bench/ensemble.py,
models/README.md).

The ensemble is an ordinary Keras model: each member's layers are copied in under a prefix
(`m0_`, `m1_`, ...), all read the same input, and the output is the softmax of the members' mean
logits. Grad-CAM reads every member's map (`member_layers`); the OOD gate reads the first
member's features, so an ensemble built around a model keeps that model's gate. A saved ensemble
can itself be a member of a new one: it is unpacked into its members (`unpack`), so a newly trained
model joins the shipped ensemble without the original member folders.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cxr
from cxr.card import ModelCard
from cxr.errors import ModelError

PREFIX = "m{}_"  # member i's layers are named PREFIX.format(i) + the member's own layer name


class EnsembleError(ModelError):
    """Models that cannot be averaged: different classes, input or validation split."""


def member_count(model) -> int:
    """How many members an ensemble model has; 0 for a single model."""
    names = {layer.name for layer in model.layers}
    count = 0
    while any(name.startswith(PREFIX.format(count)) for name in names):
        count += 1
    return count


def member_layers(model, name: str) -> tuple[str, ...]:
    """Every member's copy of the layer `name`, in member order (empty for a single model)."""
    return tuple(PREFIX.format(i) + name for i in range(member_count(model)))


def split_key(card: ModelCard) -> tuple:
    """What fixes a model's validation split: its data, split folder, fraction and split seed."""
    from cxr.train import validation_seed

    data, cfg = card.training.get("data", {}), card.training.get("config", {})
    return data.get("fingerprint"), data.get("split"), cfg.get("val_fraction", 0.15), validation_seed(cfg)


def check_members(cards: list[ModelCard]) -> None:
    """Raise EnsembleError unless the models can be averaged and calibrated on one split."""
    if len(cards) < 2:
        raise EnsembleError("An ensemble needs at least two models.")
    first = cards[0]
    for card in cards[1:]:
        for what, a, b in (("classes", first.classes, card.classes), ("input size", first.image_size, card.image_size),
                           ("resize policy", first.resize_policy, card.resize_policy),
                           ("architecture", first.arch, card.arch)):
            if a != b:
                raise EnsembleError(f"{card.name} differs from {first.name} in {what} ({b} vs {a}).")
        if split_key(card) != split_key(first):
            raise EnsembleError(f"{card.name} and {first.name} did not hold out the same validation images "
                                "(train the members with the same --split-seed on the same data).")
    if first.binary or any(c.binary for c in cards):
        raise EnsembleError("Ensembles of binary (sigmoid) models are not supported.")


def unpack(model, temperature: float) -> list[tuple[object, float, str]]:
    """(model, temperature, prefix) per member: a single model as it is (prefix ""); an ensemble
    as its members, each up to its own logits, with the temperature it was averaged at and the
    prefix its layers carry. So a new model can join a saved ensemble without its members'
    original folders: the ensemble becomes those members again, plus the new one."""
    import keras

    count = member_count(model)
    if count == 0:
        return [(model, temperature, "")]
    out = []
    for i in range(count):
        calibrated = model.get_layer(PREFIX.format(i) + "calibrated")  # logits / the member's temperature
        logits = keras.Model(model.input, calibrated.input, name=f"member{i}")
        out.append((logits, 1.0 / float(calibrated.get_config()["scale"]), PREFIX.format(i)))
    return out


def build_ensemble(members: list, temperatures: list[float] | None = None,
                   prefixes: list[str] | None = None) -> object:
    """One Keras model whose output is the softmax of the members' mean logits, each member's
    divided by its own temperature first (`temperatures`, default 1) so that all are calibrated.

    That is the softmax of their mean log-probability (a normalised geometric mean: a member sure
    an image is not COVID-19 pulls the ensemble down more than an arithmetic mean would). Averaging
    logits keeps one score for Grad-CAM, as for a single model: the ensemble's logit.
    `prefixes`: for members unpacked from an ensemble (`unpack`), the prefix to drop from their
    layer names; they end in their logits already.
    """
    import keras

    image = keras.Input(members[0].input_shape[1:], name="image")
    logits = []
    for i, member in enumerate(members):
        old_prefix = prefixes[i] if prefixes else ""
        output_layer = member.layers[-1]
        activation = output_layer.get_config().get("activation")
        if activation != "softmax" and not (old_prefix and activation == "linear"):
            raise EnsembleError(f"Member {i + 1} does not end in a softmax; it cannot be averaged.")

        def renamed(layer, prefix=PREFIX.format(i), output_layer=output_layer, old_prefix=old_prefix):
            config = {**layer.get_config(), "name": prefix + layer.name.removeprefix(old_prefix)}
            if layer is output_layer:
                config["activation"] = "linear"  # the member's logits
            return layer.__class__.from_config(config)

        # Called on `image`, the copies join one flat graph (no nested models), so Grad-CAM and
        # the OOD gate can address any member's layer by name.
        copy = keras.models.clone_model(member, input_tensors=image, clone_function=renamed)
        for source, target in zip(member.layers, copy.layers, strict=True):
            target.set_weights(source.get_weights())
        temperature = temperatures[i] if temperatures else 1.0
        logits.append(keras.layers.Rescaling(1.0 / temperature, name=PREFIX.format(i) + "calibrated")(copy.output))
    mean = keras.layers.Average(name="mean_logits")(logits)
    return keras.Model(image, keras.layers.Activation("softmax", name="probs")(mean), name="ensemble")


def make_ensemble(paths: list[Path], name: str, data: Path | None = None, command: str = "",
                  threshold_rule: str | None = None):
    """Load the members, build the ensemble and fit its temperature, COVID-19 threshold, OOD gate
    and templates on the members' shared validation split -> (model, card, write_extra), ready for
    `ModelStore.save`. `data`: where the training data is now, if not where the cards say.
    `threshold_rule`: cxr.calibration.THRESHOLD_RULES; None = the members' rule if they share one, else "images"."""
    from cxr.calibration import threshold_rule_of  # cxr.calibration -> cxr.predict -> cxr.ood imports this module
    from cxr.store import load_model
    from cxr.train import finalize_on_recorded_split

    loaded = [load_model(Path(p)) for p in paths]
    cards = [card for _, card in loaded]
    check_members(cards)
    unpacked = [part for model, card in loaded for part in unpack(model, card.temperature)]
    model = build_ensemble(*(list(column) for column in zip(*unpacked, strict=True)))
    first = cards[0]
    training = {key: first.training[key] for key in ("data", "config", "lung_segmenter") if key in first.training}
    card = ModelCard(
        name=name, arch=first.arch, classes=list(first.classes), image_size=first.image_size,
        resize_policy=first.resize_policy, created=datetime.now(UTC).isoformat(timespec="seconds"),
        version=cxr.__version__,
        training={**training, "command": command,
                  "ensemble_of": [member for c in cards for member in _members(c)]},
    )
    rules = {threshold_rule_of(c) for c in cards}
    rule = threshold_rule or (rules.pop() if len(rules) == 1 else "images")
    write_extra = finalize_on_recorded_split(model, card, data, threshold_rule=rule)
    return model, card, write_extra


def _members(card: ModelCard) -> list[dict]:
    """What the card of a new ensemble lists for one of its inputs: a saved ensemble's own members."""
    return card.training.get("ensemble_of") or [{"name": card.name, "command": card.training.get("command", ""),
                                                  "best_epoch": card.training.get("best_epoch")}]
