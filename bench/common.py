"""What the single-model benches on a labelled split share: their flags, the model, the decoded images."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def model_on_split(description: str, argv: list[str] | None = None):
    """Parse --model (default: the active one), --data (default $CXR_DATA_ROOT/cxr-data) and --split
    (default test), and load the model: (Predictor, args)."""
    from cxr.cli import resolve_model_path
    from cxr.config import get_paths
    from cxr.predict import Predictor

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=get_paths().data_root / "cxr-data")
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    return Predictor.from_path(resolve_model_path(args.model)), args


def decoded_split(predictor, data: Path, split: str):
    """The labelled images of `split` in the model's class order, and each decoded: (ImageSet, [(H, W) uint8])."""
    from cxr.data import load_imageset
    from cxr.decode import decode_image

    images = load_imageset(data, split, predictor.classes)
    decoded: list[np.ndarray] = [decode_image(p) for p in images.paths]
    return images, decoded
