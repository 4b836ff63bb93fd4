"""Per-class template images: the mean training image of each class, at model input size.

Shown next to an upload so a reader can see what "typical" looks like for each class, and how
the upload differs from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.data import ImageSet, load_for_model
from cxr.errors import CxrError

INDEX_FILE = "templates.json"
TEMPLATES_DIR = "templates"  # sub-folder of a saved model holding its templates


def compute_templates(images: ImageSet, image_size: int, policy: str) -> dict[str, tuple[np.ndarray, int]]:
    """{class: (mean image (S, S) uint8, number of images averaged)}, streaming one file at a time."""
    sums = {c: np.zeros((image_size, image_size), np.float64) for c in images.classes}
    counts = dict.fromkeys(images.classes, 0)
    for path, label in zip(images.paths, images.labels, strict=False):
        try:
            img = load_for_model(path, image_size, policy)
        except CxrError:
            continue
        name = images.classes[label]
        sums[name] += img
        counts[name] += 1
    return {
        c: (np.round(sums[c] / max(counts[c], 1)).astype(np.uint8), counts[c]) for c in images.classes
    }


def save_templates(templates: dict[str, tuple[np.ndarray, int]], out_dir: Path, meta: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = {"classes": {}, **(meta or {})}
    for name, (img, count) in templates.items():
        file = f"{name}.png"
        Image.fromarray(img).save(out_dir / file, optimize=True)
        index["classes"][name] = {"file": file, "n_images": count}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return out_dir


def load_templates(folder: Path) -> dict[str, tuple[np.ndarray, int]]:
    """Read templates written by `save_templates`; {} if the folder has none."""
    folder = Path(folder)
    try:
        index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for name, entry in index.get("classes", {}).items():
        with Image.open(folder / entry["file"]) as pil:
            out[name] = (np.asarray(pil.convert("L")), int(entry["n_images"]))
    return out
