"""Where things live: data roots and the model store, overridable from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Paths:
    # Folder that holds the datasets (cxr-data/, cxr-data-mini/, cxr-lungs/). CI and the README set
    # CXR_DATA_ROOT; the default is the shared folder beside a checkout.
    data_root: Path
    # The model store: one sub-folder per saved model plus the ACTIVE pointer file.
    model_dir: Path
    # Per-class template images shipped with the default model.
    assets_dir: Path


def get_paths() -> Paths:
    """Read the paths from the environment each call (tests change it with monkeypatch)."""
    return Paths(
        data_root=Path(os.environ.get("CXR_DATA_ROOT", REPO_ROOT.parent / "shared")).resolve(),
        model_dir=Path(os.environ.get("CXR_MODEL_DIR", REPO_ROOT / "models")).resolve(),
        assets_dir=Path(os.environ.get("CXR_ASSETS_DIR", REPO_ROOT / "assets")).resolve(),
    )
