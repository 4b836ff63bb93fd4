"""Command line of the cxr library: `python -m cxr COMMAND ...`, one command per job below.

Output for machines (--json) goes to stdout; logs and errors go to stderr, never a traceback
(set CXR_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ chatter off stderr

from cxr.config import get_paths  # noqa: E402
from cxr.errors import CxrError  # noqa: E402
from cxr.preprocess import RESIZE_POLICIES  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: a message, not a traceback
        if os.environ.get("CXR_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _floats(text: str) -> list[float]:
    """"0.92,1,1.08" -> [0.92, 1.0, 1.08] (argparse turns the ValueError into a usage message)."""
    return [float(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cxr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="print the Keras summary of an architecture")
    p.add_argument("--arch", default="cxrnet")
    p.add_argument("--binary", action="store_true", help="sigmoid head (the reference design)")
    p.add_argument("--classes", type=int, default=3, help="number of classes of a softmax head")
    p.add_argument("--image-size", type=int, default=None, help="default: the architecture's own")
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("train", help="train a model on a dataset folder and save it in the store")
    p.add_argument("--data", type=Path, required=True, help="Kaggle-layout root or folder of class folders")
    p.add_argument("--split", default=None, help="sub-folder to train on (default: train if present)")
    p.add_argument("--arch", default="cxrnet")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate")
    p.add_argument("--image-size", type=int, default=None, help="default: the architecture's own")
    p.add_argument("--resize", default="lungs", choices=RESIZE_POLICIES,
                   help="how an X-ray becomes square: crop (central square), lungs (box around the lung "
                        "fields, clipped to the image), lung-square (that box kept square, padded black, never "
                        "stretched), lung-fields (that box, outside the lung fields blacked out), letterbox, stretch")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--source-cues", type=float, default=0.5,
                   help="share of training images of every class degraded like journal figures (0 = plain recipe)")
    p.add_argument("--crop-others", type=float, default=0.0,
                   help="share of the training images of the classes other than COVID19 that also get a "
                        "figure's tight crop (every COVID-19 image here is a cropped figure)")
    p.add_argument("--intensity", choices=("standardize", "equalize"), default="standardize",
                   help="cxrnet's grey-level normalisation per image: standardize (mean and contrast) or "
                        "equalize (histogram equalisation: the same input under any monotone change such as "
                        "another detector's exposure curve)")
    p.add_argument("--ema", action="store_true", help="validate and keep a moving average of the weights")
    p.add_argument("--lung-gate", action="store_true",
                   help="cxrnet pools its final features over the lung fields only (a frozen copy of the lung "
                        "segmenter inside the model), so the box's edges cannot carry the decision")
    p.add_argument("--fine-map", action="store_true",
                   help="cxrnet's last stage at 14x14 instead of 7x7: Grad-CAM cells half as wide (with "
                        "--lung-gate, the gate follows the lungs without growing them)")
    p.add_argument("--atrous", action="store_true",
                   help="cxrnet's last stage at 14x14 as the 7x7 network computed densely (what lung-gate "
                        "makes of a trained model; with --lung-gate --init-from it trains on)")
    p.add_argument("--detail-side", type=int, default=None, metavar="PX",
                   help="cxrnet blurs its input to this side and back first, so sharp originals and journal "
                        "figures reach it with the same detail (e.g. 112 at the 224 px input)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from this saved model's weights (same shape) instead of a fresh initialisation")
    p.add_argument("--init-member", type=int, default=None, metavar="I",
                   help="with --init-from an ensemble: start from its member I (0-based)")
    p.add_argument("--precise-bn", type=int, default=10, metavar="BATCHES",
                   help="validate with batch-norm statistics averaged over this many training batches "
                        "(0 = Keras' moving averages)")
    p.add_argument("--precise-bn-source", choices=["clean", "training"], default="clean",
                   help="the batches precise batch norm averages: clean = the training images as served, "
                        "neither augmented nor figure-degraded; training = the augmented batches as trained")
    _threshold_rule_arg(p, "images")
    p.add_argument("--no-figure-validation", action="store_true",
                   help="keep the epoch with the lowest validation loss alone, not its mean with the loss on "
                        "figure-like copies of the validation images")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the validation split (default: --seed); runs sharing it hold out the same "
                        "images and can be compared or averaged on them")
    p.add_argument("--binary", action="store_true", help="two classes, sigmoid head")
    p.add_argument("--classes", default=None, help="comma-separated class folders to use, e.g. COVID19,NORMAL")
    p.add_argument("--strategy", default="none", choices=["none", "mirrored", "multi-worker"],
                   help="tf.distribute strategy: mirrored = the GPUs of this host, multi-worker = hosts given "
                        "by TF_CONFIG")
    p.add_argument("--cpu-replicas", type=int, default=0,
                   help="split this CPU into N logical devices (lets 'mirrored' run without GPUs)")
    p.add_argument("--name", default=None, help="name in the model store")
    p.add_argument("--activate", action="store_true", help="make the new model the active one")
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("segmenter", help="train the lung segmenter used by --resize lungs on a cxr-lungs folder")
    p.add_argument("--data", type=Path, default=None, help="cxr-lungs folder (default: $CXR_DATA_ROOT/cxr-lungs)")
    p.add_argument("--out", type=Path, default=None, help="where to save it (default: the shipped one)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_segmenter)

    p = sub.add_parser("calibrate", help="refit temperature, COVID-19 threshold and OOD gate of a saved model "
                                         "on the validation split its card records")
    p.add_argument("--model", default=None, help="model folder or store name (default: active)")
    p.add_argument("--test-time-scales", type=_floats, default=None, metavar="S,S,...",
                   help="average the logits over the box scaled by each of these (1 = the box itself; "
                        "e.g. 0.92,1,1.08); 1 alone: one view")
    p.add_argument("--test-time-shift", type=float, default=0.0, metavar="F",
                   help="with --test-time-scales, also shift each view left and right by this fraction of the box")
    _threshold_rule_arg(p, None)
    p.set_defaults(run=cmd_calibrate)

    p = sub.add_parser("ensemble", help="average models that held out the same validation images into one "
                                        "model, calibrated on those images, and save it in the store")
    p.add_argument("members", nargs="+", metavar="MODEL", help="store names or model folders (two or more)")
    p.add_argument("--name", required=True, help="name of the ensemble in the store")
    p.add_argument("--data", type=Path, default=None,
                   help="where the members' training data is now (default: where their cards say)")
    p.add_argument("--activate", action="store_true", help="make the ensemble the active model")
    _threshold_rule_arg(p, None, "the members' rule if they share one, else images")
    p.set_defaults(run=cmd_ensemble)

    p = sub.add_parser("lung-gate", help="re-read a saved cxrnet model (or ensemble) over its lung fields on a "
                                         "14x14 map, without retraining, refit it on validation and save it")
    p.add_argument("model", metavar="MODEL", help="store name or model folder")
    p.add_argument("--name", required=True, help="name of the new model in the store")
    p.add_argument("--data", type=Path, default=None,
                   help="where the model's training data is now (default: where its card says)")
    p.set_defaults(run=cmd_lung_gate)

    p = sub.add_parser("models", help="list the saved models, newest first, marking the active and shipped one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("delete", help="remove a saved model from the store (never the active or shipped one, "
                                      "or a member of the shipped one)")
    p.add_argument("name", help="store name of the model")
    p.set_defaults(run=cmd_delete)

    p = sub.add_parser("evaluate", help="metrics of a model on a labelled folder")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default=None, help="e.g. test; without it DIR is a folder of class folders")
    p.add_argument("--model", default=None, help="model folder or store name (default: active)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--record", metavar="KEY", default=None,
                   help="also store the metrics in the model card under metrics[KEY] (e.g. internal_test)")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files and folders of them")
    p.add_argument("files", nargs="+", metavar="FILE_OR_DIR", help="image files; folders are searched recursively")
    p.add_argument("--model", default=None)
    p.add_argument("--json", action="store_true", help="a JSON array on stdout, written as results arrive")
    p.add_argument("--csv", type=Path, default=None, metavar="OUT", help="also write one CSV row per file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("templates", help="write the per-class mean images of a training set")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--out", type=Path, default=None, help="default: assets/templates")
    p.add_argument("--model", default=None, help="take input size and resize policy from this model")
    p.set_defaults(run=cmd_templates)
    return parser


def _command_line() -> str:
    """The command that started this run, for the model card (empty when called as a library)."""
    return "python -m cxr " + shlex.join(sys.argv[1:] if sys.argv[0].endswith("__main__.py") else [])


def resolve_model_path(model: str | None) -> Path:
    """A folder path, a name in the store, or (None) the active model."""
    from cxr.store import ModelStore

    store = ModelStore(get_paths().model_dir)
    if model is None:
        return store.active_path()
    if Path(model).is_dir():
        return Path(model)
    return store.path_of(model)


def _default_split(data: Path, split: str | None, default: str) -> str | None:
    if split is not None:
        return None if split.lower() in ("", "none") else split
    return default if (data / default).is_dir() else None


def cmd_summary(args) -> int:
    from cxr.model import build_model

    model = build_model(args.arch, 1 if args.binary else args.classes, args.image_size)
    model.summary(print_fn=lambda line, *a, **k: print(line))
    return EXIT_OK


def _threshold_rule_arg(parser, default: str | None, otherwise: str = "the card's rule") -> None:
    # A literal, like --precise-bn-source's choices, so --help needs no TensorFlow; tests/test_cli.py
    # checks it against cxr.calibration.THRESHOLD_RULES.
    keep = f" (default: {otherwise})" if default is None else ""
    parser.add_argument("--threshold-rule", choices=["images", "groups"], default=default,
                        help="how the COVID-19 threshold counts the validation COVID-19 images for its 95 %% "
                             "sensitivity: images = each once; groups = each patient or publication once, its "
                             "images sharing one weight" + keep)


def cmd_train(args) -> int:
    from cxr.store import ModelStore
    from cxr.train import TrainConfig, train

    if args.cpu_replicas > 1:
        from cxr.distribute import split_cpu

        split_cpu(args.cpu_replicas)
    config = TrainConfig(
        data=args.data, split=_default_split(args.data, args.split, "train"), arch=args.arch,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        image_size=args.image_size, resize_policy=args.resize, augment=not args.no_augment,
        source_cues=args.source_cues, crop_others=args.crop_others, intensity=args.intensity, strategy=args.strategy,
        val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
        split_seed=args.split_seed, binary=args.binary, ema=args.ema,
        lung_gate=args.lung_gate, fine_map=args.fine_map, atrous=args.atrous, detail_side=args.detail_side,
        init_from=str(resolve_model_path(args.init_from)) if args.init_from else None, init_member=args.init_member,
        precise_bn=args.precise_bn, precise_bn_source=args.precise_bn_source, threshold_rule=args.threshold_rule,
        figure_validation=not args.no_figure_validation,
        classes=tuple(args.classes.split(",")) if args.classes else None, name=args.name,
        command=_command_line(),
    )

    def report(epoch: int, logs: dict) -> None:
        # Four significant digits, not decimals: a fine-tuning learning rate of 5e-05 is not "0.0000".
        shown = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, float))
        print(f"epoch {epoch + 1}/{config.epochs} {shown}", file=sys.stderr, flush=True)

    saved = train(config, ModelStore(get_paths().model_dir), on_epoch_end=report, activate=args.activate)
    val = saved.card.metrics["validation"]
    print(json.dumps({"name": saved.name, "path": str(saved.path), "activated": args.activate,
                      "validation_accuracy": val["accuracy"], "validation_macro_auroc": val["macro_auroc"],
                      "seconds": saved.card.training["seconds"]}))
    return EXIT_OK


def cmd_segmenter(args) -> int:
    from cxr.lungs import default_segmenter_dir
    from cxr.lungs_train import train_segmenter

    data = args.data or get_paths().data_root / "cxr-lungs"
    out = args.out or default_segmenter_dir()
    info = train_segmenter(data, out, epochs=args.epochs, seed=args.seed,
                           on_epoch=lambda e, logs: print(f"epoch {e + 1}/{args.epochs} loss {logs['loss']:.4f}",
                                                          file=sys.stderr))
    print(json.dumps({"saved": str(out), "test": info["test"], "test_with_figure_cues": info["test_with_figure_cues"],
                      "seconds": info["seconds"]}, indent=2))
    return 0


def cmd_calibrate(args) -> int:
    from cxr.train import refinalize
    from cxr.views import grid

    views = None if args.test_time_scales is None else grid(args.test_time_scales, args.test_time_shift)
    card = refinalize(resolve_model_path(args.model), views, args.threshold_rule)
    print(json.dumps({"name": card.name, "test_time_views": card.test_time_views, **card.metrics["calibration"]}))
    return EXIT_OK


def cmd_ensemble(args) -> int:
    from cxr.ensemble import make_ensemble
    from cxr.store import ModelStore

    store = ModelStore(get_paths().model_dir)
    model, card, write_extra = make_ensemble([resolve_model_path(m) for m in args.members], args.name, args.data,
                                             command=_command_line(), threshold_rule=args.threshold_rule)
    saved = store.save(model, card, write_extra)
    if args.activate:
        store.activate(saved.name)
    print(json.dumps({"name": saved.name, "path": str(saved.path), "activated": args.activate,
                      "members": [m["name"] for m in card.training["ensemble_of"]],
                      "covid_threshold": card.covid_threshold, **card.metrics["calibration"]}))
    return EXIT_OK


def cmd_lung_gate(args) -> int:
    from cxr.regate import lung_gated_model
    from cxr.store import ModelStore

    model, card, write_extra = lung_gated_model(resolve_model_path(args.model), args.name, args.data,
                                                command=_command_line())
    saved = ModelStore(get_paths().model_dir).save(model, card, write_extra)
    print(json.dumps({"name": saved.name, "path": str(saved.path), "lung_gated_from": card.training["lung_gated_from"],
                      "covid_threshold": card.covid_threshold, **card.metrics["calibration"]}))
    return EXIT_OK


def cmd_models(args) -> int:
    from cxr.store import ModelStore

    store = ModelStore(get_paths().model_dir)
    active, shipped, members = store.active_or_none(), store.default_name(), store.shipped_members()
    rows = [{"name": m.name, "active": m.name == active, "shipped": m.name == shipped,
             "shipped_member_of": shipped if m.name in members else None,
             "arch": m.card.arch, "image_size": m.card.image_size, "created": m.card.created,
             "members": len(m.card.training.get("ensemble_of", [])) or 1,
             "validation_accuracy": m.card.metrics.get("validation", {}).get("accuracy")} for m in store.list()]
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    for row in rows:
        marks = "".join(f", {k}" for k in ("active", "shipped") if row[k])
        if row["shipped_member_of"]:
            marks += f", shipped in {row['shipped_member_of']}"
        accuracy = row["validation_accuracy"]
        scored = f"val. accuracy {accuracy:.3f}" if accuracy is not None else "no metrics"
        print(f"{row['name']}{marks}: {row['arch']} x{row['members']}, {row['image_size']} px, {row['created'][:16]}, "
              + scored)
    return EXIT_OK


def cmd_delete(args) -> int:
    from cxr.store import ModelStore

    ModelStore(get_paths().model_dir).delete(args.name)
    print(json.dumps({"deleted": args.name}))
    return EXIT_OK


def _figure(value) -> str:
    """One figure of `evaluate`'s plain output: rates to 4 places, counts as they are, intervals as lo-hi."""
    if isinstance(value, tuple | list):
        return "-".join(_figure(v) for v in value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def cmd_evaluate(args) -> int:
    from cxr.predict import Predictor

    predictor = Predictor.from_path(resolve_model_path(args.model))
    metrics = predictor.evaluate(args.data, args.split)[3]
    metrics["model"] = predictor.card.name
    if args.record:
        card = predictor.card
        card.metrics[args.record] = {"data": str(args.data), "split": args.split, **metrics}
        card.save(resolve_model_path(args.model))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{predictor.card.name} on {args.data}{'/' + args.split if args.split else ''}: n={metrics['n']} "
              f"accuracy={metrics['accuracy']:.4f} macro_auroc={metrics['macro_auroc']} ece={metrics['ece']:.4f}")
        if metrics["binary"]:
            print("COVID19 vs NORMAL: " + " ".join(f"{k}={_figure(v)}" for k, v in metrics["binary"].items()))
    return EXIT_OK


def cmd_predict(args) -> int:
    from cxr.predict import Predictor, iter_image_files

    predictor = Predictor.from_path(resolve_model_path(args.model))
    total = sum(1 for _ in iter_image_files(args.files))  # a first lazy walk, so the bar knows the end
    progress = Progress(total, enabled=not args.no_progress and total > 1)
    rejected = 0
    csv_out = CsvResults(args.csv, predictor.classes) if args.csv else None
    if args.json:
        sys.stdout.write("[")
    try:
        for n, r in enumerate(predictor.predict_stream(iter_image_files(args.files), args.batch_size)):
            rejected += "error" in r
            if args.json:
                sys.stdout.write((",\n" if n else "\n") + json.dumps(r))
            elif "error" in r:
                print(f"{r['file']}: REJECTED: {r['error']}")
            else:
                probs = " ".join(f"{c}={p:.3f}" for c, p in r["probabilities"].items())
                flag = f" [NOT LIKE A CHEST X-RAY: ood_score={r['ood_score']:.2f}]" if r.get("ood") else ""
                if r.get("small_image"):
                    flag += (f" [SMALL: {r['longest_side_px']} px; below the COVID-19 threshold rules out less "
                             "than on a full-size film]")
                print(f"{r['file']}: {r['label']} ({probs}){flag}")
            if csv_out:
                csv_out.write(r)
            progress.update(n + 1)
    finally:
        if args.json:
            sys.stdout.write("\n]\n")
        if csv_out:
            csv_out.close()
        progress.close()
    return EXIT_REJECTED if rejected or total == 0 else EXIT_OK


class Progress:
    """A one-line progress bar on stderr (files done, rate, time left); silent when disabled."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.started, self._shown = total, enabled, time.monotonic(), 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._shown < 0.5 and done < self.total):
            return
        self._shown = now
        rate = done / max(now - self.started, 1e-9)
        left = (self.total - done) / rate if rate > 0 else 0
        filled = int(30 * done / max(self.total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} files, "
                         f"{rate:.0f}/s, {left:.0f} s left ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class CsvResults:
    """Rows written as results arrive: file, label, one probability column per class, ood, size, error."""

    def __init__(self, path: Path, classes: list[str]):
        import csv

        self.classes = classes
        self.fh = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.writer = csv.writer(self.fh)
        self.writer.writerow(["file", "label", *(f"p_{c}" for c in classes), "ood", "ood_score",
                              "longest_side_px", "small_image", "error"])

    def write(self, r: dict) -> None:
        probs = r.get("probabilities", {})
        self.writer.writerow([r["file"], r.get("label", ""), *(probs.get(c, "") for c in self.classes),
                              r.get("ood", ""), r.get("ood_score", ""), r.get("longest_side_px", ""),
                              r.get("small_image", ""), r.get("error", "")])

    def close(self) -> None:
        self.fh.close()


def cmd_templates(args) -> int:
    from cxr.card import ModelCard
    from cxr.data import fingerprint, load_imageset
    from cxr.templates import compute_templates, save_templates

    card = ModelCard.load(resolve_model_path(args.model))
    images = load_imageset(args.data, _default_split(args.data, args.split, "train"), card.classes)
    templates = compute_templates(images, card.image_size, card.resize_policy)
    out = save_templates(templates, args.out or get_paths().assets_dir / "templates",
                         {"image_size": card.image_size, "resize_policy": card.resize_policy,
                          "data_fingerprint": fingerprint(images)})
    print(json.dumps({"out": str(out), "counts": {c: n for c, (_, n) in templates.items()}}))
    return EXIT_OK
