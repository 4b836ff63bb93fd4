"""Datasets on disk: discovery, grouped validation split, fingerprint and the tf.data pipeline.

Reads the Kaggle layout (DIR/train/<CLASS>/, DIR/test/<CLASS>/) or a bare folder of class
sub-folders; the class names are the folder names. Images are streamed from disk each epoch
(decoded by the same `cxr.decode` + `cxr.preprocess` code that serves predictions), never held
in memory as a whole.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.decode import decode_image
from cxr.errors import CxrError, DatasetError
from cxr.lungs import default_segmenter
from cxr.preprocess import LUNG_POLICIES, apply_lung_field, lung_options, model_view_stacks, prepare_image
from cxr.views import view_boxes

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class ImageSet:
    """A list of labelled image files. `labels` index into `classes`."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    # Unit that must not be split between train and validation (patient or publication).
    groups: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # e.g. "NIH ChestX-ray14 ..." from the manifest

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {c: self.labels.count(i) for i, c in enumerate(self.classes)}

    def class_names(self) -> list[str]:
        """The class name of every image, in `paths` order."""
        return [self.classes[label] for label in self.labels]

    def subset(self, index) -> ImageSet:
        index = list(index)
        pick = lambda seq: [seq[i] for i in index] if seq else []  # noqa: E731
        return ImageSet(pick(self.paths), pick(self.labels), self.classes, pick(self.groups), pick(self.sources))


def split_dir(data_dir: Path, split: str | None) -> Path:
    """The folder of class sub-folders for `split` ('train', 'test') or DIR itself if None."""
    data_dir = Path(data_dir)
    folder = data_dir / split if split else data_dir
    if not folder.is_dir():
        where = f"a '{split}' folder in {data_dir}" if split else f"the folder {data_dir}"
        raise DatasetError(f"Cannot find {where}.")
    return folder


def list_classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DatasetError(
            f"{folder} needs at least two class sub-folders (e.g. COVID19/, NORMAL/, PNEUMONIA/); "
            f"found {classes or 'none'}."
        )
    return classes


def load_imageset(data_dir: Path, split: str | None = None, classes: list[str] | None = None) -> ImageSet:
    """Find the images of `split` under `data_dir`, labelled by folder; `classes` fixes the order."""
    folder = split_dir(data_dir, split)
    found = list_classes(folder)
    classes = list(classes) if classes else found
    missing = [c for c in classes if c not in found]
    if missing:
        raise DatasetError(f"{folder} has no folder for class(es) {missing}; it has {found}.")
    manifest = _read_manifest(Path(data_dir))
    paths, labels, groups, sources = [], [], [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            row = manifest.get(path.resolve(), {})
            paths.append(path)
            labels.append(label)
            groups.append(row.get("group_id") or f"file:{path.name}")
            sources.append(row.get("source", ""))
    if not paths:
        raise DatasetError(f"No PNG, JPEG or DICOM images in the class folders of {folder}.")
    return ImageSet(paths, labels, classes, groups, sources)


def _read_manifest(data_dir: Path) -> dict[Path, dict[str, str]]:
    path = data_dir / MANIFEST
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {(data_dir / row["path"]).resolve(): row for row in csv.DictReader(fh) if row.get("path")}


def split_train_val(images: ImageSet, val_fraction: float = 0.15, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Stratified split that keeps every group (patient) on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / val_fraction))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(images)), images.labels, images.groups))
    return images.subset(train_idx), images.subset(val_idx)


def fingerprint(images: ImageSet) -> str:
    """SHA-256 over class, file name and content of every image: which data trained a model."""
    digest = hashlib.sha256()
    for path, label in sorted(zip(images.paths, images.labels, strict=False), key=lambda t: (t[1], t[0].name)):
        digest.update(f"{images.classes[label]}/{path.name}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def decode_readable(images: ImageSet) -> tuple[list[np.ndarray], np.ndarray]:
    """(decoded (H, W) uint8 images, their labels) of every file of `images` that decodes; an
    unreadable one is left out, as training leaves it out."""
    decoded, labels = [], []
    for path, label in zip(images.paths, images.labels, strict=True):
        try:
            decoded.append(decode_image(path))
        except CxrError:
            continue
        labels.append(label)
    return decoded, np.asarray(labels, np.int64)


def load_for_model(path: str | Path, image_size: int, policy: str, views=()) -> np.ndarray:
    """Decode + resize one file: the exact path used for training, evaluation and serving.
    (S, S) uint8, or (K, S, S) with test-time `views` (`cxr.views`)."""
    return prepare_decoded(decode_image(path), image_size, policy, views)


def prepare_decoded(img: np.ndarray, image_size: int, policy: str, views=()) -> np.ndarray:
    """`load_for_model` for an image already decoded, for a caller that also needs its size."""
    if not views:
        return prepare_image(img, image_size, policy)
    return model_view_stacks([img], image_size, policy, views)[0][0]


def lung_views(paths, policy: str = "lungs", batch_size: int = 32) -> dict[str, tuple | None]:
    """{str(path): (lung box, whole-frame lung field or None, (H, W))} for files (None for an
    unreadable one), batched through the segmenter. The field is kept only under "lung-fields"."""
    out: dict[str, tuple | None] = {}
    paths = [str(p) for p in paths]
    segmenter = default_segmenter()
    for i in range(0, len(paths), batch_size):
        decoded = []
        for path in paths[i:i + batch_size]:
            try:
                decoded.append((path, decode_image(path)))
            except CxrError:
                out[path] = None
        views = segmenter.views([img for _, img in decoded], **lung_options(policy))
        for (path, img), (box, lungs) in zip(decoded, views, strict=True):
            out[path] = (box.as_tuple(), lungs, img.shape[:2])
    return out


def crop_to(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box of a decoded image, at full resolution; black where the box leaves the frame (as
    `cxr.preprocess.crop_box`)."""
    return np.asarray(Image.fromarray(np.asarray(img, np.uint8)).crop(box))


def view_loader(paths, image_size: int, policy: str, cues=None, labels=None, views=()):
    """`load(path, rng) -> (S, S) uint8`: one file as the model sees it, with figure cues drawn from
    `rng` if `cues` (a `cxr.shortcut.SourceCues`) is given, for the class name of each path in
    `labels` (aligned with `paths`; cues may depend on it). Raises CxrError for an unreadable file.
    With test-time `views` (`cxr.views`), a (K, S, S) stack instead: every view gets the same cues.

    Lung boxes (and fields) are found once per file, on the clean image, so the segmenter does
    not run again every epoch; figure cues other than the crop go on the lung crop, where a real
    figure has them.
    """
    lung = lung_views(paths, policy) if policy in LUNG_POLICIES else None
    label_of = dict(zip(map(str, paths), labels, strict=True)) if labels is not None else {}

    def load(path: str, rng: np.random.Generator | None) -> np.ndarray:
        img = decode_image(path)
        kinds = cues.draw(rng, label_of.get(path)) if cues is not None else ()
        if lung is None:
            img = cues.apply(img, kinds, rng) if cues else img
            if not views:
                return prepare_image(img, image_size, policy)
            return model_view_stacks([img], image_size, policy, views)[0][0]
        if lung[path] is None:
            raise CxrError("unreadable image")
        box, weights, shape = lung[path]
        if "crop" in kinds:
            # A figure is cropped before anyone looks for its lungs: crop the whole X-ray and
            # find the box and field on the crop, as serving will. Cropping the lung box
            # instead cut the lungs while the field stayed the uncropped one's, and a
            # lung-fields model then learnt "lungs cut by the frame" as COVID-19 (probe: +0.24).
            img = cues.apply(img, ("crop",), rng)
            found, weights = default_segmenter().views([img], **lung_options(policy))[0]
            box, shape = found.as_tuple(), img.shape[:2]
            kinds = tuple(k for k in kinds if k != "crop")
        stack = []
        for view in view_boxes(box, views):
            crop = crop_to(img, view)
            if kinds:  # the same cues on every view: each starts from the same generator state
                crop = cues.apply(crop, kinds, copy.deepcopy(rng) if views else rng)
            # The same pixels as `prepare_image` under the lung policies, from the cached view.
            # (No field under "lungs": nothing is blacked out.)
            stack.append(apply_lung_field(prepare_image(crop, image_size, "stretch"), weights, view, shape))
        return np.stack(stack) if views else stack[0]

    return load


def figure_like(images: ImageSet, image_size: int, policy: str, cues, seed: int = 0,
                views=()) -> tuple[np.ndarray, np.ndarray]:
    """Every readable image once, with figure cues from a generator of its own file name, so the
    same copies come back every call: (x (N, S, S) uint8, or (N, K, S, S) with test-time `views`,
    labels (N,)).

    Validation of a model against source cues: a model that reads "figure => COVID-19" loses
    on the figure-like normals and pneumonias here while it may still gain on the clean set.
    """
    view = view_loader(images.paths, image_size, policy, cues, images.class_names(), views)
    xs, ys = [], []
    for path, label in zip(images.paths, images.labels, strict=False):
        try:
            xs.append(view(str(path), np.random.default_rng([seed, zlib.crc32(Path(path).name.encode())])))
            ys.append(label)
        except CxrError as exc:
            log.warning("skipping %s: %s", Path(path).name, exc)
    if not xs:
        return np.zeros((0, *([len(views)] if views else []), image_size, image_size), np.uint8), np.zeros(0, np.int64)
    return np.stack(xs), np.asarray(ys, np.int64)


def make_dataset(
    images: ImageSet,
    image_size: int,
    policy: str,
    batch_size: int = 32,
    training: bool = False,
    augment=None,
    seed: int = 0,
    source_cues=None,
    views=(),
):
    """A tf.data pipeline of (x, label) batches: x (B, S, S, 3) float32 in 0..255, or (B, K, S, S, 3)
    with test-time `views` (`cxr.views`; evaluation only).

    `augment`, if given (training only), maps a (B, S, S, 1) float batch to the same shape.
    `source_cues` (a `cxr.shortcut.SourceCues`, training only) degrades decoded images of every
    class like journal figures, before the square resize, so the source stops predicting the class.

    Unreadable files are skipped with a warning rather than stopping a training run.
    """
    import tensorflow as tf

    cues = source_cues if training else None
    views = () if training else tuple(views)
    shape = (len(views), image_size, image_size) if views else (image_size, image_size)
    view = view_loader(images.paths, image_size, policy, cues, images.class_names(), views)

    def load(path_bytes, key):
        path = path_bytes.decode()
        try:
            # Each element's cues come from its own key, drawn in pipeline order from a seeded
            # stream (below): the map runs in parallel threads, and one shared generator made every
            # run differ; a per-file visit count did too, because prefetching loads files ahead.
            return view(path, np.random.default_rng([seed, int(key) % 2**63]) if cues else None), True
        except CxrError as exc:
            log.warning("skipping %s: %s", Path(path).name, exc)
            return np.zeros(shape, np.uint8), False

    def load_tf(path, label, key):
        img, ok = tf.numpy_function(load, [path, key], (tf.uint8, tf.bool), stateful=False)
        img.set_shape(shape)
        ok.set_shape(())
        return img, label, ok

    ds = tf.data.Dataset.from_tensor_slices(([str(p) for p in images.paths], np.asarray(images.labels, np.int32)))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    # A new key per element and pass, the same sequence in every run with this seed.
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, keys).map(lambda pair, key: (*pair, key))
    # In order (deterministic), so a seed gives the same batches every run.
    ds = ds.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(_is_readable).map(_drop_flag).batch(batch_size).map(_add_channel)
    if training and augment is not None:
        # Augment the single grey channel, before it is tripled: a third of the work. One batch
        # at a time: its random ops draw from one seeded stream, which parallel calls would race for.
        ds = ds.map(lambda x, y: (augment(x), y))
    return ds.map(_to_three_channels).prefetch(tf.data.AUTOTUNE)


def _is_readable(img, label, ok):
    return ok


def _drop_flag(img, label, ok):
    return img, label


def _add_channel(img, label):
    import tensorflow as tf

    return tf.cast(img, tf.float32)[..., None], label


def _to_three_channels(x, label):
    """(B, S, S, 1) -> (B, S, S, 3) float32, as cxr.preprocess.to_model_input does."""
    import tensorflow as tf

    return tf.repeat(x, 3, axis=-1), label
