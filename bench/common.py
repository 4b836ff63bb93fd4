"""What the single-model benches on a labelled split share: their flags, the model, the decoded images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Accept --json on every bench: each prints JSON anyway, and scripts and notes spell it out."""
    parser.add_argument("--json", action="store_true", help="print JSON (the only output; accepted for scripts)")


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
    add_json_flag(parser)
    args = parser.parse_args(argv)
    return Predictor.from_path(resolve_model_path(args.model)), args


def model_and_recorded_split(description: str, argv: list[str] | None = None, add_arguments=None):
    """Parse --model (default: the active one) and --data (the training data the model's card records,
    default $CXR_DATA_ROOT/cxr-data), plus whatever `add_arguments(parser)` adds; load the model and
    the (training, validation) split its card records. A refusal (no such model, other data) exits
    with its message, not a traceback: (Predictor, training ImageSet, validation ImageSet, args)."""
    from cxr.cli import resolve_model_path
    from cxr.config import get_paths
    from cxr.errors import CxrError
    from cxr.predict import Predictor
    from cxr.train import recorded_split

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=get_paths().data_root / "cxr-data",
                        help="the training data the card records (its fingerprint must match)")
    add_json_flag(parser)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        predictor = Predictor.from_path(resolve_model_path(args.model))
        train_set, val_set = recorded_split(predictor.card, args.data)
    except CxrError as e:
        sys.exit(f"{Path(sys.argv[0]).name}: {e}")
    return predictor, train_set, val_set, args


def decoded_split(predictor, data: Path, split: str):
    """The labelled images of `split` in the model's class order, and each decoded: (ImageSet, [(H, W) uint8])."""
    from cxr.data import load_imageset
    from cxr.decode import decode_image

    images = load_imageset(data, split, predictor.classes)
    decoded: list[np.ndarray] = [decode_image(p) for p in images.paths]
    return images, decoded
