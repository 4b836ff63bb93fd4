"""Training: dataset folder -> a complete, evaluated model saved atomically into the store."""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import cxr
from cxr import selection
from cxr.acquisition import on_validation
from cxr.calibration import (
    THRESHOLD_RULES,
    covid_group_counts,
    fit_temperature,
    nll,
    rule_weights,
    threshold_for_sensitivity,
    threshold_for_weighted_sensitivity,
    threshold_rule_of,
)
from cxr.card import ModelCard
from cxr.data import ImageSet, figure_like, fingerprint, load_imageset, make_dataset, split_train_val
from cxr.distribute import is_chief, make_strategy
from cxr.errors import DatasetError, TrainingError
from cxr.metrics import COVID, classification_metrics, expected_calibration_error
from cxr.ood import OodGate
from cxr.predict import apply_temperature
from cxr.preprocess import LUNG_POLICIES, RESIZE_POLICIES
from cxr.resolution import validation_record
from cxr.shortcut import KINDS, SourceCues
from cxr.store import ModelStore, StoredModel
from cxr.templates import TEMPLATES_DIR, compute_templates, save_templates

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]  # (epoch index from 0, logs incl. val_*) -> None


PRECISE_BN_SOURCES = ("clean", "training")  # see TrainConfig.precise_bn_source


@dataclass(frozen=True)
class TrainConfig:
    data: Path  # dataset root (Kaggle layout) or a folder of class sub-folders
    split: str | None = "train"  # sub-folder to train on; None = `data` itself. Test is never used.
    arch: str = "cxrnet"
    # 30 although validation log-loss still falls later (best epochs 26, 32, 31 of 32): run to 40,
    # seed 0 reached 0.608 but learnt the crop (probe: tight crop +0.17 against +0.07 at 32), which
    # validation rewards because its COVID-19 images are cropped figures. See models/README.md.
    epochs: int = 30
    batch_size: int = 32
    # 3e-4, not 1e-3: on the lung box, validation log-loss 0.59/0.63 (2 seeds) against 0.61/0.75/0.79.
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4  # AdamW decoupled weight decay: ~1k images overfit quickly
    # Evaluate and keep the moving average of the weights (Polyak averaging). Off by default: with
    # precise batch norm gathered for the averaged weights, three seeds swung less from epoch to
    # epoch on validation but ended worse on it (0.792 vs 0.751: the average trails) and read
    # a tight crop more (+0.14 vs +0.10). See models/README.md.
    ema: bool = False
    image_size: int | None = None  # None = the architecture's own (cxr.model.DEFAULT_IMAGE_SIZE)
    # "lungs": crop to the lung fields (cxr.lungs), so how a source frames the chest cannot mark
    # the class; "crop" (central square) was the recipe before, and the shipped reference models'.
    resize_policy: str = "lungs"
    augment: bool = True
    # Share of training images (of every class) made to look like journal figures: downscaled,
    # JPEG-compressed, cropped, lettered, with arrows and borders (cxr.shortcut). 0 = the plain
    # recipe, in which those cues mark the COVID-19 class.
    source_cues: float = 0.5
    # Share of the training images of the other classes that also get a figure's crop, on top of
    # `source_cues` (cxr.shortcut.SourceCues.crop_others): every COVID-19 image here is a figure
    # cut out of a page, and a tight crop was the one cue the lung-box models still read.
    crop_others: float = 0.0
    # cxrnet's first layer (cxr.model.INTENSITIES): "equalize" makes the input the same under any
    # monotone grey-level change; "standardize" only under linear ones. Not the default: over three
    # seeds equalising kept every darker COVID-19 X-ray above the threshold and lowered clean
    # validation log-loss (0.713 vs 0.751), but a tight crop alone then raised P(COVID19) of normals
    # by +0.15 (vs +0.10). See models/README.md.
    intensity: str = "standardize"
    # cxrnet pools its final features over the lung fields only (cxr.model.build_cxrnet). Off by
    # default: over three seeds Grad-CAM's border heat fell from 0.17 to 0.13 (target 0.087), but a
    # normal X-ray made into a journal figure gained +0.105 P(COVID19) (+0.004 without). See
    # models/README.md.
    lung_gate: bool = False
    # cxrnet's last stage at 14x14 instead of 7x7 (cxr.model.build_cxrnet): finer Grad-CAM, and with
    # the lung gate a field that stays on the lungs. Off by default: with the gate, over three seeds
    # Grad-CAM's border heat met the target (0.082 vs 0.087), but 3-class accuracy fell to 0.66 and
    # clean validation log-loss rose to 0.80 (models/README.md).
    fine_map: bool = False
    # cxrnet's last stage at 14x14 as the 7x7 network computed densely (cxr.model.build_cxrnet), the
    # shape `python -m cxr lung-gate` gives a trained model; with `init_from` such a model trains on.
    atrous: bool = False
    # cxrnet blurs its input to this side (px) and back before anything else (cxr.model.detail_cap),
    # so a sharp original and a journal figure reach it with the same detail; None = no cap. Off by
    # default: at 112 px, five fine-tuned members kept 11 of 13 validation COVID-19 films found at a
    # 300 px figure's resolution (a sharp set: 4 of 12) and lost the figure rise, but COVID-19 vs
    # normal AUROC fell from 0.981 to 0.956 and the probe failed (0.851; models/README.md). The shipped
    # ensemble's members use 160, fine-tuned for 10 epochs from lung-gated members, not trained from scratch.
    detail_side: int | None = None
    # Start from the weights of a saved model of the same shape (its folder) instead of a fresh
    # initialisation; `init_member` picks one member of a saved ensemble.
    init_from: str | None = None
    init_member: int | None = None
    val_fraction: float = 0.15  # held out from the training split, grouped by patient
    # Epochs without val_loss improvement before stopping: at the lower learning rate the best epoch
    # came at 21-35 of 40, and 8-12 had stopped some seeds before they had learnt much.
    patience: int = 20
    # Training batches whose averaged batch-norm statistics the model is validated (and kept) with
    # (cxr.precise_bn); 0 = Keras' moving averages, which swing with the last few batches: same run,
    # first 12 epochs, mean |change| of validation accuracy 0.24 without, 0.09 with 10 batches.
    precise_bn: int = 10
    # Where those statistics come from: "clean" = the shuffled training images as served, neither
    # augmented nor degraded by figure cues; "training" = the augmented training batches themselves
    # (the default until 2026-12-04). Serving normalises clean X-rays: on the same weights, statistics
    # of augmented batches cost 0.08-0.18 of validation accuracy, from scratch and fine-tuned, and a
    # paired run from scratch kept a better epoch with clean ones (validation log-loss 0.595 against
    # 0.706; bench/results/bn-statistics-source-from-scratch-2026-12-04.json).
    precise_bn_source: str = "clean"
    # How the COVID-19 threshold counts the validation COVID-19 images (cxr.calibration.THRESHOLD_RULES):
    # "images", each once; "groups", each patient or publication once, which one paper's many films
    # cannot dominate (8 of the 14 validation COVID-19 images of the default split are one paper's).
    threshold_rule: str = "images"
    # Keep the epoch with the lowest mean of the validation loss and the loss on figure-like copies
    # of the validation images (cxr.selection); False = validation loss alone, which rewarded the
    # crop shortcut (a 40-epoch run won on validation with a crop rise of +0.17).
    figure_validation: bool = True
    seed: int = 0
    # Seed of the validation split (and of its figure-like copies); None = `seed`. Runs that differ
    # in `seed` but share this hold out the same images, so they can be averaged and the average
    # calibrated and thresholded on that split (bench/ensemble.py).
    split_seed: int | None = None
    binary: bool = False  # COVID19-vs-rest sigmoid head (the reference design's head)
    classes: tuple[str, ...] | None = None  # restrict/order classes; None = all folders
    strategy: str = "none"  # none | mirrored | multi-worker (see cxr.distribute)
    name: str | None = None  # store name; default <date>-<arch>
    command: str = ""  # the command line that started this run, recorded in the card

    @property
    def validation_seed(self) -> int:
        return validation_seed({"seed": self.seed, "split_seed": self.split_seed})

    def __post_init__(self):
        from cxr.model import DEFAULT_IMAGE_SIZE

        if self.arch not in DEFAULT_IMAGE_SIZE:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {sorted(DEFAULT_IMAGE_SIZE)}")
        if self.image_size is None:
            object.__setattr__(self, "image_size", DEFAULT_IMAGE_SIZE[self.arch])
        from cxr.model import INTENSITIES

        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}")
        if self.intensity != "standardize" and self.arch != "cxrnet":
            raise ValueError("intensity applies to the cxrnet architecture only")
        if (self.lung_gate or self.fine_map or self.atrous) and self.arch != "cxrnet":
            raise ValueError("lung_gate, fine_map and atrous apply to the cxrnet architecture only")
        if self.fine_map and self.atrous:
            raise ValueError("fine_map and atrous are two ways to the same 14x14 map; choose one")
        if self.detail_side is not None and self.arch != "cxrnet":
            raise ValueError("detail_side applies to the cxrnet architecture only")
        from cxr.model import MIN_DETAIL

        if self.detail_side is not None and not MIN_DETAIL <= self.detail_side < self.image_size:
            raise ValueError(f"detail_side must be between {MIN_DETAIL} and image_size {self.image_size} (exclusive)")
        if self.init_member is not None and self.init_from is None:
            raise ValueError("init_member picks a member of the model given by init_from")
        if self.resize_policy not in RESIZE_POLICIES:
            raise ValueError(f"resize_policy must be one of {RESIZE_POLICIES}")
        from cxr.distribute import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        if not 0 <= self.source_cues <= 1:
            raise ValueError("source_cues must be between 0 and 1")
        if not 0 <= self.crop_others <= 1:
            raise ValueError("crop_others must be between 0 and 1")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError("val_fraction must be between 0 and 0.5")
        if self.precise_bn < 0:
            raise ValueError("precise_bn must be >= 0 batches")
        if self.precise_bn_source not in PRECISE_BN_SOURCES:
            raise ValueError(f"precise_bn_source must be one of {', '.join(PRECISE_BN_SOURCES)}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 32:
            raise ValueError("epochs and batch_size must be >= 1, image_size >= 32")


def class_weights(labels: list[int], n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, mean 1: each class counts equally in the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    return {i: float(len(labels) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


class _Progress:
    """Adapts plain callables to a Keras callback (the library never imports a UI)."""

    def __new__(cls, on_epoch_end: EpochCallback | None, should_stop: Callable[[], bool] | None):
        import keras

        class Progress(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if on_epoch_end:
                    on_epoch_end(epoch, dict(logs or {}))
                if should_stop and should_stop():
                    self.model.stop_training = True

            def on_train_batch_end(self, batch, logs=None):
                if should_stop and should_stop():
                    self.model.stop_training = True

        return Progress()


def train(
    config: TrainConfig,
    store: ModelStore,
    on_epoch_end: EpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    activate: bool = False,
    on_finishing: Callable[[], None] | None = None,
) -> StoredModel:
    """Train, keep the best epoch by validation loss, evaluate on validation, save atomically.

    `on_finishing` is called once the epochs are over, before calibration, the OOD gate and the
    templates are fitted (a minute or two on a full dataset, with no epochs to report)."""
    import keras

    # Before any other TensorFlow work: a multi-worker strategy must set up its cluster first.
    strategy = make_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    images = load_imageset(Path(config.data), config.split, list(config.classes) if config.classes else None)
    if config.binary:
        images = _binary_order(images)
    train_set, val_set = split_train_val(images, config.val_fraction, config.validation_seed)
    if len(val_set) == 0 or len(set(train_set.labels)) < len(images.classes):
        raise DatasetError("Too few images to hold out a validation set with every class in training.")
    log.info("train %s, validation %s", train_set.counts(), val_set.counts())

    train_ds, val_ds = training_datasets(config, train_set, val_set)
    figure_val = (figure_validation_set(val_set, config.image_size, config.resize_policy, config.validation_seed)
                  if config.figure_validation else None)
    monitor = selection.MONITOR if figure_val is not None else "val_loss"

    if config.strategy != "none":
        train_ds, val_ds = _shard_by_data(train_ds), _shard_by_data(val_ds)
    if not is_chief():
        # Every worker trains; only the chief's model lands in the real store.
        store = ModelStore(Path(tempfile.mkdtemp(prefix="cxr-worker-")))
    n_classes = len(images.classes)
    with strategy.scope():
        model = compiled_model(config, n_classes)
    callbacks = training_callbacks(config, train_ds, figure_val, monitor, on_epoch_end, should_stop, train_set)
    started = time.monotonic()
    with warnings.catch_warnings():
        # The pipeline's length is unknown (unreadable files are filtered out), which Keras
        # reports as "ran out of data" at every epoch end; that is expected here.
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        try:
            history = model.fit(
                train_ds, validation_data=val_ds, epochs=config.epochs, verbose=0, shuffle=False,
                class_weight=class_weights(train_set.labels, n_classes), callbacks=callbacks,
            )
        except ValueError as exc:
            if "PerReplica" not in str(exc) or config.strategy != "multi-worker":
                raise
            # Keras 3's fit cannot consume a multi-worker dataset (keras-team/keras#20585).
            raise TrainingError(
                "Keras 3 cannot yet train one model across several workers with model.fit "
                "(keras-team/keras#20585); run --strategy mirrored on each host's GPUs instead."
            ) from None
    seconds = time.monotonic() - started
    if on_finishing:
        on_finishing()

    hist = {k: [float(v) for v in vals] for k, vals in history.history.items() if k != "learning_rate"}
    card = ModelCard(
        name=config.name or f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{config.arch}",
        arch=config.arch,
        classes=list(images.classes),
        image_size=config.image_size,
        resize_policy=config.resize_policy,
        binary=config.binary,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        version=cxr.__version__,
        training={
            "command": config.command,
            "data": {
                "path": str(config.data),
                "split": config.split,
                "fingerprint": fingerprint(images),
                "n_train": len(train_set),
                "n_validation": len(val_set),
                "counts": images.counts(),
                "train_counts": train_set.counts(),
            },
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
            "replicas": int(strategy.num_replicas_in_sync),
            "epochs_run": len(hist.get("loss", [])),
            "selected_by": monitor,
            "best_epoch": int(np.argmin(hist[monitor])) + 1 if hist.get(monitor) else None,
            "seconds": round(seconds, 1),
            "history": hist,
        },
    )
    if config.resize_policy in LUNG_POLICIES:
        from cxr.lungs import default_segmenter

        # Which segmenter cut the lung boxes: the same one must serve this model.
        info = default_segmenter().info
        card.training["lung_segmenter"] = {"sha256": info.get("sha256"), "test": info.get("test")}
    write_extra = finalize(model, card, train_set, val_set, config.batch_size, figure_val,
                           config.validation_seed, config.threshold_rule)
    saved = store.save(model, card, write_extra)
    if activate:
        store.activate(saved.name)
    return saved


def statistics_batches(config: TrainConfig, train_set: ImageSet | None, train_ds):
    """The batches precise batch norm averages over: the training pipeline itself, or (source
    "clean") the same images shuffled the same way, neither augmented nor degraded by figure cues."""
    if config.precise_bn_source == "training":
        return train_ds
    if train_set is None:
        raise ValueError("precise_bn_source 'clean' needs the training images")
    return make_dataset(train_set, config.image_size, config.resize_policy, config.batch_size, True, None,
                        config.seed, None)


def training_callbacks(config: TrainConfig, train_ds, figure_val, monitor: str,
                       on_epoch_end: EpochCallback | None = None,
                       should_stop: Callable[[], bool] | None = None,
                       train_set: ImageSet | None = None) -> list:
    """The callbacks of a run, in the order their hooks must run.

    Keras calls each hook in list order. Swapping in the averaged weights (`ema`) comes first, so
    precise batch norm then gathers statistics for the weights that are validated and kept (the
    other way round, the kept model is normalised with statistics of weights it no longer has).
    The figure-like validation writes its loss into the epoch's logs before anything reads `monitor`.
    """
    import keras

    callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema else []
    if config.precise_bn:
        from cxr import precise_bn

        callbacks.append(precise_bn.callback(statistics_batches(config, train_set, train_ds), config.precise_bn))
    if figure_val is not None:
        callbacks.append(selection.callback(*figure_val, config.batch_size))
    return callbacks + [
        keras.callbacks.EarlyStopping(monitor, patience=config.patience, restore_best_weights=True,
                                      start_from_epoch=min(5, config.epochs // 4), mode="min"),
        keras.callbacks.ReduceLROnPlateau(monitor, factor=0.5, patience=max(1, config.patience // 2), mode="min"),
        _Progress(on_epoch_end, should_stop),
    ]


def training_datasets(config: TrainConfig, train_set: ImageSet, val_set: ImageSet):
    """The streamed (train, validation) pipelines of a run: augmentation on the training side only."""
    from cxr.augment import augment_batch

    augment = augment_batch if config.augment else None
    cues = (SourceCues(config.source_cues, crop_others=config.crop_others)
            if config.source_cues > 0 or config.crop_others > 0 else None)
    train_ds = make_dataset(
        train_set, config.image_size, config.resize_policy, config.batch_size, True, augment, config.seed, cues
    )
    return train_ds, make_dataset(val_set, config.image_size, config.resize_policy, config.batch_size)


def figure_validation_set(val_set: ImageSet, image_size: int, policy: str, seed: int,
                          views=()) -> tuple[np.ndarray, np.ndarray]:
    """Figure-like copies of the validation images (every one gets cues), the same every epoch;
    as stacks of test-time `views` for a model that has them (`cxr.views`)."""
    return figure_like(val_set, image_size, policy, SourceCues(p=1.0), seed, views)


def compiled_model(config: TrainConfig, n_classes: int):
    """A fresh model of `config.arch`, compiled with the run's optimizer and loss."""
    import keras

    from cxr.model import build_model

    model = build_model(config.arch, 1 if config.binary else n_classes, config.image_size, config.intensity,
                        config.lung_gate, config.fine_map, config.atrous, config.detail_side)
    if config.init_from:
        start_from(model, Path(config.init_from), config.init_member)
    loss = "binary_crossentropy" if config.binary else "sparse_categorical_crossentropy"
    optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay,
                                       use_ema=config.ema, ema_momentum=0.98)
    model.compile(optimizer, loss=loss, metrics=["accuracy"])
    return model


def start_from(model, path: Path, member: int | None = None) -> None:
    """Set `model`'s weights to those of the model saved at `path` (member `member` of a saved
    ensemble), layer by layer by name; a layer missing there or of another shape is a TrainingError."""
    from cxr.ensemble import member_count, unpack
    from cxr.model import copy_weights
    from cxr.store import load_model

    source, card = load_model(path)
    count = member_count(source)
    if count and member is None:
        raise TrainingError(f"{card.name} is an ensemble of {count}; say which member to start from.")
    if member is not None and not 0 <= member < count:
        raise TrainingError(f"{card.name} has no member {member} (it has {count}).")
    prefix = ""
    if count:
        source, _, prefix = unpack(source, card.temperature)[member]
    try:
        copy_weights(model, source, prefix)
    except ValueError as exc:
        raise TrainingError(f"{card.name} cannot start this model: {exc}.") from None


def _shard_by_data(ds):
    """Split batches between replicas/workers by element: the pipeline has no files to shard by."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def finalize(model, card: ModelCard, train_set: ImageSet, val_set: ImageSet, batch_size: int = 32,
             figure_val: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0,
             threshold_rule: str | None = None) -> Callable[[Path], None]:
    """Everything a trained model needs besides its weights, all fitted on training/validation data.

    Sets the temperature, COVID-19 threshold and validation metrics on `card` (and, given the
    figure-like validation copies, the same metrics on them), the metrics on the validation X-rays
    stored as another hospital might, and the between-model selection figure; returns the function
    that writes the templates and the OOD gate into the model's folder. `threshold_rule`: see
    `calibrate` (None keeps the card's).
    """
    from cxr.predict import Predictor

    predictor = Predictor(model, card)
    card.temperature = 1.0
    val_probs, val_labels, val_features = predictor.infer_imageset(val_set, batch_size)
    card.metrics["calibration"] = calibrate(card, val_probs, val_labels, groups=val_set.groups,
                                            threshold_rule=threshold_rule)
    val_probs = apply_temperature(val_probs, card.temperature)
    card.metrics["validation"] = validation_metrics(val_probs, val_labels, card)
    report_figures = figure_val is not None
    if figure_val is None:  # the gate needs them whether or not the card reports on them
        figure_val = figure_validation_set(val_set, card.image_size, card.resize_policy, seed, card.test_time_views)
    figure_probs, figure_features = predictor.infer_views(figure_val[0], batch_size)  # calibrated: temperature is set
    if report_figures and len(figure_val[1]):
        card.metrics["validation_figure_like"] = validation_metrics(figure_probs, figure_val[1], card)
    acquisition = on_validation(predictor, val_set, batch_size)
    card.metrics["validation_acquisition"] = acquisition
    if COVID in card.classes:  # what a figure's resolution costs, for the Predict page's small-image warning
        card.metrics["resolution"] = validation_record(predictor, val_set, card.training.get("data", {}).get("path"),
                                                       batch_size=batch_size)
    card.metrics["selection"] = selection.model_score(
        card.metrics["calibration"]["nll_after"], nll(figure_probs, figure_val[1]) if len(figure_val[1]) else None,
        acquisition["mean_log_loss"])
    gate = fit_gate(predictor, train_set, [val_features, figure_features], batch_size, seed)
    card.metrics["ood"] = gate_summary(gate, val_features, figure_features)
    templates = compute_templates(train_set, card.image_size, card.resize_policy)

    def write_extra(folder: Path) -> None:
        save_templates(templates, folder / TEMPLATES_DIR)
        gate.save(folder)

    return write_extra


# At most this many training images get figure-like copies for the OOD gate: enough to learn how
# figures vary, and a bounded cost (~0.1 s and 50 kB each) on a large training set.
GATE_FIGURES = 2000


def fit_gate(predictor, train_set: ImageSet, val_features: list[np.ndarray], batch_size: int = 32,
             seed: int = 0) -> OodGate:
    """The OOD gate: fitted on the training X-rays as the model sees them at serving time and as
    journal figures (a cropped, lettered, re-compressed X-ray is still a chest X-ray; a gate that
    knew only the clean ones flagged 12 % of figure-like test X-rays), its boundary set on the
    validation features given (clean and figure-like)."""
    card = predictor.card
    figures = train_set
    if len(train_set) > GATE_FIGURES:
        figures = train_set.subset(np.linspace(0, len(train_set) - 1, GATE_FIGURES).round().astype(int))
    # Every figure cue the probe knows, the caption strip included: the gate must pass any figure.
    views = figure_like(figures, card.image_size, card.resize_policy, SourceCues(p=1.0, kinds=KINDS), seed + 1)[0]
    # The box alone: the gate reads view 0 of any test-time views, so running the others is waste.
    parts = [predictor.infer_imageset(train_set, batch_size, views=False)[2],
             predictor.infer_views(views, batch_size)[1]]
    train_features = np.concatenate([f for f in parts if len(f)])
    val = [f for f in val_features if len(f)]
    return OodGate.fit(train_features, np.concatenate(val) if val else np.zeros((0, train_features.shape[1])),
                       layers=predictor.feature_layers)


def gate_summary(gate: OodGate, val_features: np.ndarray, figure_features: np.ndarray) -> dict:
    """What the card says about the gate: the layers it reads and how many validation X-rays it flags."""
    flagged = lambda f: round(float((gate.score(f) > 1).mean()), 4) if len(f) else None  # noqa: E731
    return {"layers": list(gate.layers or ()), "fitted_on": "training X-rays, as served and as journal figures",
            "boundary_on": "validation X-rays, as served and as journal figures",
            "validation_flagged": flagged(val_features), "validation_figure_like_flagged": flagged(figure_features)}


def validation_metrics(probs: np.ndarray, labels: np.ndarray, card: ModelCard) -> dict:
    """`classification_metrics` plus the share of normals below the COVID-19 threshold."""
    out = classification_metrics(probs, labels, card.classes, card.covid_threshold)
    out["normal_below_threshold"] = selection.normals_below(probs, labels, card.classes, card.covid_threshold)
    return out


def validation_seed(config: dict) -> int:
    """The validation split's seed of a run, from the config its card records."""
    split_seed = config.get("split_seed")
    return config.get("seed", 0) if split_seed is None else split_seed


def refinalize(path: Path, views=None, threshold_rule: str | None = None) -> ModelCard:
    """Refit calibration, threshold, templates and OOD gate of a saved model on the data and
    validation split its card records (for models saved before these existed, or with new
    test-time `views`, `cxr.views`, or a new `threshold_rule`; None keeps the card's). Rewrites the
    card and the extras in place, each atomically; the weights are untouched."""
    from cxr.store import load_model
    from cxr.views import check_views

    model, card = load_model(Path(path))
    if views is not None:
        card.test_time_views = [list(view) for view in check_views(views)]
    write_extra = finalize_on_recorded_split(model, card, threshold_rule=threshold_rule)
    write_extra(Path(path))
    card.save(Path(path))
    return card


def finalize_on_recorded_split(model, card: ModelCard, data_path: Path | None = None,
                               threshold_rule: str | None = None) -> Callable[[Path], None]:
    """`finalize` on the data and validation split the card records (refitting a saved model, or
    fitting an ensemble whose members share that split). `data_path` stands in for the recorded
    path (the same data elsewhere): its fingerprint must be the recorded one."""
    cfg = card.training.get("config", {})
    train_set, val_set = recorded_split(card, data_path)
    seed = validation_seed(cfg)
    figure_val = (figure_validation_set(val_set, card.image_size, card.resize_policy, seed, card.test_time_views)
                  if cfg.get("figure_validation") else None)
    return finalize(model, card, train_set, val_set, cfg.get("batch_size", 32), figure_val, seed, threshold_rule)


def recorded_split(card: ModelCard, data_path: Path | None = None) -> tuple[ImageSet, ImageSet]:
    """(training, validation) images of a saved model, as its card records them; `data_path` stands
    in for the recorded path (the same data elsewhere): its fingerprint must be the recorded one."""
    cfg = card.training.get("config", {})
    data = card.training.get("data", {})
    if not cfg or "path" not in data:
        raise DatasetError(f"The card of {card.name} does not record its training data; retrain it instead.")
    data_path = Path(data_path or data["path"])
    images = load_imageset(data_path, data.get("split"), card.classes)
    if card.binary:
        images = _binary_order(images)
    if data.get("fingerprint") and fingerprint(images) != data["fingerprint"]:
        raise DatasetError(f"The data at {data_path} is not the data {card.name} was trained on.")
    return split_train_val(images, cfg.get("val_fraction", 0.15), validation_seed(cfg))


def calibrate(card: ModelCard, val_probs: np.ndarray, val_labels: np.ndarray,
              sensitivity: float = 0.95, groups: list[str] | None = None, threshold_rule: str | None = None) -> dict:
    """Fit the temperature and the COVID-19 threshold on validation; set them on `card`.

    Given each validation image's group (patient or publication), the card also records how many
    groups the COVID-19 images come from: images of one patient are not independent evidence.
    `threshold_rule` (THRESHOLD_RULES) says how the threshold counts them; None keeps the rule of the
    card's last calibration ("images" for a new card), so a refit does not change it unasked.
    """
    rule = threshold_rule or threshold_rule_of(card)
    card.temperature = fit_temperature(val_probs, val_labels)
    calibrated = apply_temperature(val_probs, card.temperature)
    out = {
        "fitted_on": "validation",
        "temperature": card.temperature,
        "ece_before": round(expected_calibration_error(val_probs, val_labels), 4),
        "ece_after": round(expected_calibration_error(calibrated, val_labels), 4),
        "nll_before": round(nll(val_probs, val_labels), 4),
        "nll_after": round(nll(calibrated, val_labels), 4),
    }
    if COVID in card.classes:
        covid = card.classes.index(COVID)
        p_covid, is_covid = calibrated[:, covid], val_labels == covid
        weights = rule_weights(is_covid, rule, groups or None)
        card.covid_threshold = threshold_for_weighted_sensitivity(p_covid, is_covid, weights, sensitivity)
        found = is_covid & (p_covid >= card.covid_threshold)
        out.update(covid_threshold=card.covid_threshold, target_sensitivity=sensitivity, threshold_rule=rule,
                   n_covid_validation=int(is_covid.sum()), covid_found_validation=int(found.sum()))
        if groups:
            out.update(covid_group_counts(p_covid, is_covid, groups, card.covid_threshold))
            if rule == "groups" and is_covid.any():
                out.update(covid_group_weighted_sensitivity=round(float(weights[found].sum()
                                                                        / weights[is_covid].sum()), 4),
                           covid_threshold_by_images=threshold_for_sensitivity(p_covid, is_covid, sensitivity))
    return out


def _binary_order(images: ImageSet) -> ImageSet:
    """A binary head predicts P(classes[1]): put COVID19 (if present) second."""
    if len(images.classes) != 2:
        raise DatasetError(f"A binary model needs exactly two classes; found {images.classes}. Use --classes.")
    if images.classes[0] != COVID:
        return images
    flipped = [1 - y for y in images.labels]
    return ImageSet(images.paths, flipped, images.classes[::-1], images.groups, images.sources)
