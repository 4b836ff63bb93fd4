"""Background training jobs: train in a thread, report progress, cancel, evaluate when done.

The app keeps one registry per server process, so a page stays responsive while a model trains
and every session sees the same job. Training is CPU-bound on a small machine, so one job runs at
a time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from cxr.errors import CxrError
from cxr.store import ModelStore, StoredModel
from cxr.train import TrainConfig, train


@dataclass
class TrainingJob:
    config: TrainConfig
    store: ModelStore
    status: str = "running"  # running | done | cancelled | failed
    stage: str = "training"  # while running: training | finishing (calibration, OOD gate) | evaluating
    epoch: int = 0  # epochs finished
    history: dict[str, list[float]] = field(default_factory=dict)
    result: StoredModel | None = None
    error: str = ""
    started: float = field(default_factory=time.time)
    evaluation: dict = field(default_factory=dict)  # {"new": metrics, "active": metrics} on test
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelling(self) -> bool:
        """Cancel was asked for; the job still ends its epoch, then saves and evaluates the model so far."""
        return self._cancel.is_set() and not self.finished

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def _on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.epoch = epoch + 1
        for key, value in logs.items():
            if isinstance(value, float) and key != "learning_rate":
                self.history.setdefault(key, []).append(value)

    def _set_stage(self, stage: str) -> None:
        self.stage = stage

    def run(self, evaluate_split: str | None = "test") -> None:
        try:
            self.result = train(self.config, self.store, self._on_epoch_end, self._cancel.is_set,
                                on_finishing=lambda: self._set_stage("finishing"))
            if evaluate_split and (self.config.data / evaluate_split).is_dir():
                self._set_stage("evaluating")
                self.evaluation = compare_on_split(self.store, self.result, self.config.data, evaluate_split)
            self.status = "cancelled" if self._cancel.is_set() else "done"
        except CxrError as exc:
            self.status, self.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - reported on the page instead of killing the thread
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"


def compare_on_split(store: ModelStore, new: StoredModel, data, split: str) -> dict:
    """Metrics of the new and the active model on the same held-out split, each with its card's
    validation figures under "validation" (`cxr.selection.validation_row`)."""
    from cxr.predict import Predictor
    from cxr.selection import validation_row

    out = {}
    candidates = {"new": new.path}
    active = store.active_or_none()
    if active is not None:
        candidates["active"] = store.root / active
    for role, path in candidates.items():
        predictor = Predictor.from_path(path)
        try:
            out[role] = {"model": predictor.card.name, **predictor.evaluate(data, split)[3],
                         "validation": validation_row(predictor.card)}
        except CxrError as exc:
            out[role] = {"error": str(exc)}
    return out


class JobRunner:
    """Holds the current job; starts a new one only when none is running."""

    def __init__(self):
        self._lock = threading.Lock()
        self.job: TrainingJob | None = None

    def start(self, config: TrainConfig, store: ModelStore) -> TrainingJob:
        with self._lock:
            if self.job is not None and not self.job.finished:
                raise CxrError("A model is already training; wait for it or cancel it first.")
            self.job = TrainingJob(config, store)
            threading.Thread(target=self.job.run, name="cxr-train", daemon=True).start()
            return self.job
