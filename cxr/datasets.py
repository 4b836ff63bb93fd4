"""Dataset folders a user may pick: only those inside the configured data root.

A web user chooses from this list and never types a path, and every candidate is resolved
(symlinks included) and checked to lie inside the root, so no `..` or link can reach the rest
of the server's disk.
"""

from __future__ import annotations

from pathlib import Path

from cxr.data import IMAGE_SUFFIXES
from cxr.errors import DatasetError


def confine(root: Path, candidate: Path) -> Path:
    """`candidate` resolved, if it lies inside `root`; else DatasetError."""
    root = Path(root).resolve()
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise DatasetError(f"{candidate} is outside the configured data folder.")
    return resolved


def _has_class_folders(folder: Path) -> bool:
    classes = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(classes) >= 2 and all(
        any(f.suffix.lower() in IMAGE_SUFFIXES for f in c.iterdir()) for c in classes
    )


def list_datasets(root: Path, depth: int = 2) -> list[Path]:
    """Folders under `root` (to `depth` levels) with a train/ split or class sub-folders."""
    root = Path(root).resolve()
    found: list[Path] = []

    def walk(folder: Path, level: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            try:
                child = confine(root, child.relative_to(root))
            except DatasetError:
                continue  # a symlink pointing out of the root
            if (child / "train").is_dir() and _has_class_folders(child / "train"):
                found.append(child)
            elif level < depth:
                walk(child, level + 1)

    if root.is_dir():
        walk(root, 1)
    return found
