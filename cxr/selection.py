"""Which epoch a training run keeps: validation loss, and loss on figure-like validation copies.

Why: validation log-loss alone rewards the crop shortcut. The validation COVID-19 images are
cropped journal figures, so a model that reads "tight crop => COVID-19" gains on validation
(40 epochs, seed 0: validation log-loss 0.608, the best of any run, while a tight crop alone
raised P(COVID19) of test normals by +0.17). Here every epoch is also scored on a copy of each
validation image made to look like a figure (every class, cues drawn once per file, so the copies
are the same every epoch: `cxr.data.figure_like`); a normal that becomes COVID-19 when cropped
costs loss there. The run keeps the epoch with the lowest mean of the clean and the figure-like
loss, and early stopping and the learning-rate schedule follow the same figure.

Between models (seeds, recipes) the figure is `model_score`: the mean calibrated validation
log-loss over three ways of seeing the validation X-rays, each asking one question. Clean: does it
do the task? Figure-like: does it read the journal-figure look that marks COVID-19 here? Stored as
another hospital might (`cxr.acquisition`): does it hold up elsewhere? Lower is better; it compares
models fairly only on the same validation split (same data and seed).
"""

from __future__ import annotations

import numpy as np

from cxr.calibration import nll
from cxr.preprocess import to_model_input

MONITOR = "val_select_loss"  # what early stopping, the LR schedule and the best epoch follow
FIGURE_LOSS = "val_figure_loss"
FIGURE_ACCURACY = "val_figure_accuracy"


def probabilities(model, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, S, S) uint8 model views -> (N, C) uncalibrated class probabilities (binary heads too)."""
    out = []
    for i in range(0, len(x), batch_size):
        out.append(np.asarray(model(to_model_input(x[i:i + batch_size]), training=False), np.float64))
    probs = np.concatenate(out) if out else np.zeros((0, 1))
    return np.concatenate([1.0 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def figure_scores(model, x: np.ndarray, y: np.ndarray, batch_size: int = 32) -> tuple[float, float]:
    """(log-loss, accuracy) of `model` on figure-like copies `x` with labels `y`."""
    probs = probabilities(model, x, batch_size)
    return nll(probs, y), float((probs.argmax(axis=1) == y).mean())


def callback(x: np.ndarray, y: np.ndarray, batch_size: int = 32):
    """A Keras callback that adds the figure-like loss and accuracy and `MONITOR` to each epoch's
    logs. It must come before the callbacks that read `MONITOR` (they share the logs dict)."""
    import keras

    class FigureValidation(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is None or "val_loss" not in logs:
                return
            loss, accuracy = figure_scores(self.model, x, y, batch_size)
            logs[FIGURE_LOSS], logs[FIGURE_ACCURACY] = loss, accuracy
            logs[MONITOR] = (float(logs["val_loss"]) + loss) / 2

    return FigureValidation()


def normals_below(probs: np.ndarray, labels: np.ndarray, classes: list[str], threshold: float) -> float | None:
    """Share of NORMAL images whose P(COVID19) stays below the operating threshold (the probe's
    figure, here on validation); None without both classes."""
    from cxr.metrics import COVID, NORMAL

    if COVID not in classes or NORMAL not in classes:
        return None
    normal = np.asarray(labels) == classes.index(NORMAL)
    if not normal.any():
        return None
    return round(float((probs[normal, classes.index(COVID)] < threshold).mean()), 4)


def _kept_epochs(training: dict) -> str:
    """'Kept epoch 12' for one trained model; an ensemble's card records its members' epochs instead."""
    if training.get("best_epoch") is not None:
        return f"Kept epoch {training['best_epoch']}"
    members = [m.get("best_epoch") for m in training.get("ensemble_of", [])]
    if members and all(e is not None for e in members):
        return f"Its {len(members)} members kept epochs {', '.join(str(e) for e in members)}, each"
    return "Its epoch was kept"


def describe(card) -> str | None:
    """How a model's epoch was chosen, how it does on figure-like validation and its selection
    figure between models, in plain words (None for a card that records none of them)."""
    figure = card.metrics.get("validation_figure_like")
    clean = card.metrics.get("validation", {})
    score = card.metrics.get("selection", {}).get("score")
    parts = []
    if figure and clean:
        text = (f"{_kept_epochs(card.training)}, chosen on clean and figure-like validation loss "
                f"together. On figure-like copies of the {figure['n']} validation images: accuracy "
                f"{figure['accuracy']:.3f} (clean {clean['accuracy']:.3f})")
        if figure.get("normal_below_threshold") is not None and clean.get("normal_below_threshold") is not None:
            text += (f"; {figure['normal_below_threshold']:.0%} of normals below the COVID-19 threshold "
                     f"(clean {clean['normal_below_threshold']:.0%})")
        parts.append(text + ".")
    if score is not None:
        parts.append(f"Selection figure between models (mean validation log-loss as stored, as journal figures and "
                     f"as another hospital might store them; lower is better): {score:.3f}.")
    return " ".join(parts) or None


def validation_row(card) -> dict:
    """One model's shortcut and robustness figures on validation, as its card records them, for the
    Retrain page's new-vs-active table (each model on its own validation split; None where a card
    records nothing): log-loss, the selection figure, normals kept below the threshold as figures,
    COVID-19 kept at or above it once darker, and, of the COVID-19 films found, those still found
    shrunk to 300 px (the journal-figure resolution the Predict page warns about)."""
    from cxr.resolution import kept_at

    metrics = card.metrics
    darker = metrics.get("validation_acquisition", {}).get("changes", {}).get("darker", {})
    return {"validation log-loss": metrics.get("calibration", {}).get("nll_after"),
            "selection figure": metrics.get("selection", {}).get("score"),
            "figure-like normals below threshold": metrics.get("validation_figure_like", {}).get(
                "normal_below_threshold"),
            "COVID-19 at or above threshold, darker": darker.get("covid_at_or_above_threshold"),
            "COVID-19 found, still found at 300 px": kept_at(card, 300)}


def model_score(clean: float | None, figure_like: float | None, acquisition: float | None) -> dict:
    """The between-model figure (see the module docstring) from the three calibrated validation
    log-losses; `score` is None unless all three are known."""
    parts = {"clean_log_loss": clean, "figure_like_log_loss": figure_like, "acquisition_log_loss": acquisition}
    known = [v for v in parts.values() if v is not None]
    return {**{k: None if v is None else round(float(v), 4) for k, v in parts.items()},
            "score": round(float(np.mean(known)), 4) if len(known) == 3 else None}
