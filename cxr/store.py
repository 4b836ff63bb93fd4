"""The model store: a folder of saved models and a pointer to the active one.

Layout:
    <model_dir>/<name>/model.keras + card.json   one complete model per folder
    <model_dir>/DEFAULT                          name of the shipped model (committed)
    <model_dir>/ACTIVE                           name of the active model (local, optional)
    <model_dir>/.staging-*/                      models being written; never listed or loaded

Writes are atomic: a model is written into a staging folder and renamed into place only when
complete, and ACTIVE is replaced with os.replace, so a crash at any moment leaves the previous
active model in place and no half-written model visible.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from cxr.card import CARD_FILE, ModelCard
from cxr.errors import ModelError

MODEL_FILE = "model.keras"
ACTIVE_FILE = "ACTIVE"
DEFAULT_FILE = "DEFAULT"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class StoredModel:
    name: str
    path: Path
    card: ModelCard


class ModelStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def list(self) -> list[StoredModel]:
        """Complete models, newest first."""
        found = []
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if _NAME.match(folder.name) and is_complete(folder):
                    try:
                        found.append(StoredModel(folder.name, folder, ModelCard.load(folder)))
                    except ModelError:
                        continue  # unreadable card: not offered
        return sorted(found, key=lambda m: (m.card.created, m.name), reverse=True)

    def path_of(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ModelError(f"{name!r} is not a valid model name.")
        path = self.root / name
        if not is_complete(path):
            raise ModelError(f"No complete model named {name!r} in the model store.")
        return path

    def _pointer(self, file: str) -> str | None:
        """The complete model that pointer file `file` names, or None."""
        try:
            name = (self.root / file).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return name if name and _NAME.match(name) and is_complete(self.root / name) else None

    def active_or_none(self) -> str | None:
        """The active model's name (ACTIVE, else DEFAULT), or None where a listing has no active model."""
        return self._pointer(ACTIVE_FILE) or self._pointer(DEFAULT_FILE)

    def active_name(self) -> str:
        name = self.active_or_none()
        if name is None:
            raise ModelError(f"No active model in {self.root}: train one with `python -m cxr train --activate`.")
        return name

    def active_path(self) -> Path:
        return self.root / self.active_name()

    def activate(self, name: str) -> None:
        """Make `name` the active model (atomic pointer swap)."""
        self.path_of(name)
        _atomic_write_text(self.root / ACTIVE_FILE, name + "\n")

    def default_name(self) -> str | None:
        """The shipped model's name (DEFAULT), if the store has one."""
        return self._pointer(DEFAULT_FILE)

    def shipped_members(self) -> set[str]:
        """The stored models the shipped default was averaged from (its card's `ensemble_of`).

        They are shipped with it, so that the shipped ensemble can be rebuilt, and are kept like it.
        """
        default = self.default_name()
        if default is None:
            return set()
        try:
            members = ModelCard.load(self.root / default).training.get("ensemble_of", [])
        except ModelError:
            return set()
        names = {str(m.get("name", "")) for m in members if isinstance(m, dict)}
        return {n for n in names if _NAME.match(n) and is_complete(self.root / n)}

    def delete(self, name: str) -> None:
        """Remove a saved model for good; never the active one, the shipped default or its members.

        The folder is first renamed into a staging folder (one atomic step), so a crash midway never
        leaves a half-deleted model listed; `clean_staging` removes whatever is left.
        """
        path = self.path_of(name)
        if name == self.default_name():
            raise ModelError(f"{name} is the shipped default model (models/DEFAULT) and is kept; it is what the "
                             "app falls back to.")
        if name in self.shipped_members():
            raise ModelError(f"{name} is a member of the shipped model {self.default_name()} and is kept with it, "
                             "so that the shipped ensemble can be rebuilt.")
        if name == self.active_or_none():
            raise ModelError(f"{name} is the active model; activate another model before deleting it.")
        trash = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        os.rename(path, trash / name)
        _fsync(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def save(self, model: keras.Model, card: ModelCard,
             write_extra: Callable[[Path], None] | None = None) -> StoredModel:
        """Write model + card (+ whatever `write_extra(folder)` adds) under card.name.

        Nothing is visible under that name until everything is written.
        """
        if not _NAME.match(card.name):
            raise ModelError(f"{card.name!r} is not a valid model name.")
        final = self.root / card.name
        if final.exists():
            raise ModelError(f"A model named {card.name!r} already exists.")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            model.save(staging / MODEL_FILE)
            if write_extra is not None:
                write_extra(staging)
            card.save(staging)
            for file in (MODEL_FILE, CARD_FILE):
                _fsync(staging / file)
            os.rename(staging, final)
            _fsync(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StoredModel(card.name, final, card)

    def clean_staging(self) -> None:
        """Remove staging folders left by a crashed training run."""
        for folder in self.root.glob(".staging-*"):
            shutil.rmtree(folder, ignore_errors=True)


def is_complete(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file() and (folder / CARD_FILE).is_file()


def load_model(path: Path) -> tuple[keras.Model, ModelCard]:
    """Load a saved model folder with Keras safe_mode (no arbitrary code from the file)."""
    path = Path(path)
    if not is_complete(path):
        raise ModelError(f"{path} is not a saved model folder (needs {MODEL_FILE} and {CARD_FILE}).")
    card = ModelCard.load(path)
    import cxr.layers  # noqa: F401 - registers the custom layers before deserialising

    try:
        model = keras.saving.load_model(path / MODEL_FILE, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise ModelError(
                "This model file contains executable code (a Lambda layer) and was refused for "
                "safety."
            ) from None
        raise ModelError(f"The model file could not be loaded: {str(exc)[:200]}") from None
    except Exception as exc:  # noqa: BLE001 - keras raises many types on a corrupt archive
        raise ModelError(f"The model file could not be loaded: {str(exc)[:200]}") from None
    return model, card


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
