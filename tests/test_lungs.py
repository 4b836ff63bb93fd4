"""Lung segmentation (cxr.lungs, cxr.lungs_train): box maths, the shipped segmenter on real masks,
training it end to end, and the "lungs" resize policy that uses it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cxr.config import get_paths
from cxr.data import load_imageset, make_dataset
from cxr.decode import decode_image
from cxr.lungs import (
    SEG_SIZE,
    LungSegmenter,
    central_square,
    default_segmenter,
    dice,
    field_in_box,
    keep_largest,
    lung_box,
    lung_field,
)
from cxr.lungs_train import evaluate_segmenter, load_pairs, train_segmenter
from cxr.preprocess import LUNG_POLICIES, crop_box, input_box, model_view, place_heatmap, prepare_image


def _two_lungs(top=30, bottom=100, left=(20, 70), width=35) -> np.ndarray:
    prob = np.zeros((SEG_SIZE, SEG_SIZE), np.float32)
    for x0 in left:
        prob[top:bottom, x0:x0 + width] = 0.9
    return prob


def _random_frames(seed: int, count: int = 300):
    """(frame shape, lung probability map) pairs: frames of any size and aspect, lungs anywhere."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        h, w = int(rng.integers(100, 900)), int(rng.integers(100, 900))
        top, left = int(rng.integers(0, 40)), int(rng.integers(0, 30))
        yield (h, w), _two_lungs(top=top, bottom=int(rng.integers(top + 60, 128)), left=(left, left + 50),
                                 width=int(rng.integers(20, 45)))


def test_lung_box_holds_both_lungs_with_a_margin_and_is_square():
    box = lung_box(_two_lungs(), (512, 512))
    assert box.found
    # Lungs span rows 30..100 and columns 20..105 of 128, i.e. 120..400 and 80..420 px of 512.
    assert box.left < 80 and box.right > 420 and box.top < 120 and box.bottom > 400
    assert box.right - box.left == box.bottom - box.top


def test_lung_box_stays_inside_a_non_square_frame():
    box = lung_box(_two_lungs(top=5, bottom=125, left=(5, 80)), (300, 600))
    assert box.found and 0 <= box.left < box.right <= 600 and 0 <= box.top < box.bottom <= 300


def test_lung_box_never_passes_the_frame_and_fields_map_any_box():
    """Rounding once put a box one pixel past the frame (a crash under lung-fields)."""
    for (h, w), prob in _random_frames(seed=0):
        box = lung_box(prob, (h, w))
        assert 0 <= box.left < box.right <= w and 0 <= box.top < box.bottom <= h
    weights = field_in_box(lung_field(_two_lungs()), (-50, -20, 250, 280), (200, 200), 32)
    assert weights.shape == (32, 32) and weights[0, 0] == 0.0 and weights.max() == pytest.approx(1.0)


def test_lung_square_letterboxes_a_clipped_box_instead_of_stretching_it():
    """Lungs nearly as wide as a landscape figure: the clipped box is 598 x 300 (the "lungs" policy
    stretches it); the padded box is that box grown evenly past the top and bottom to a square."""
    prob = _two_lungs(top=5, bottom=125, left=(5, 80))  # 110 of 128 columns: 516 px, 598 with margins
    clipped = lung_box(prob, (300, 600))
    padded = lung_box(prob, (300, 600), pad=True)
    assert (clipped.right - clipped.left, clipped.bottom - clipped.top) == (598, 300)
    assert padded.right - padded.left == padded.bottom - padded.top == 598
    assert (padded.left, padded.right) == (clipped.left, clipped.right)
    assert padded.top == -149 and padded.bottom == 449  # 149 px of black above and below


def test_lung_square_boxes_are_square_and_hold_the_clipped_box():
    for (h, w), prob in _random_frames(seed=1):
        clipped, padded = lung_box(prob, (h, w)), lung_box(prob, (h, w), pad=True)
        side = padded.right - padded.left
        assert abs((padded.bottom - padded.top) - side) <= 1
        assert padded.left <= clipped.left and padded.right >= clipped.right
        assert padded.top <= clipped.top and padded.bottom >= clipped.bottom
        if clipped.right - clipped.left == clipped.bottom - clipped.top:
            assert padded == clipped  # nothing was clipped: the two policies agree
        else:  # bars of equal width (to a pixel) on the clipped axis only
            bars = (-padded.left, padded.right - w) if padded.left < 0 else (-padded.top, padded.bottom - h)
            assert min(bars) >= 0 and abs(bars[0] - bars[1]) <= 1


def test_lung_square_input_of_a_landscape_figure_has_even_black_bars(full_data):
    """A real COVID-19 figure whose lungs fill its width: black bars above and below, no stretch."""
    for path in sorted((full_data / "test" / "COVID19").glob("*.jpg")):
        img = decode_image(path)
        clipped, _ = model_view(img, 96, "lungs")
        pixels, box = model_view(img, 96, "lung-square")
        bars = box[1] < 0 or box[3] > img.shape[0]
        if box[2] - box[0] == box[3] - box[1] and bars and box[0] >= 0 and box[2] <= img.shape[1]:
            break
    else:
        pytest.fail("no test COVID-19 figure with a vertically clipped lung box")
    black_rows = np.flatnonzero(pixels.max(axis=1) == 0)
    top, bottom = (black_rows < 48).sum(), (black_rows >= 48).sum()
    assert top >= 2 and bottom >= 2 and abs(top - bottom) <= 2, (top, bottom)
    assert not (clipped.max(axis=1) == 0).any()  # the stretched input has no bars


def test_no_plausible_lungs_fall_back_to_the_central_square():
    empty = lung_box(np.zeros((SEG_SIZE, SEG_SIZE)), (300, 400))
    assert not empty.found and empty.as_tuple() == central_square((300, 400)) == (50, 0, 350, 300)
    speck = np.zeros((SEG_SIZE, SEG_SIZE))
    speck[60:64, 60:64] = 1
    assert not lung_box(speck, (300, 400)).found


def test_keep_largest_drops_specks_but_keeps_two_lungs():
    prob = _two_lungs()
    prob[2:4, 2:4] = 1.0  # a marker-sized false positive in a corner
    kept = keep_largest(prob >= 0.5)
    assert not kept[2, 2] and kept[50, 30] and kept[50, 80]
    assert lung_box(prob, (128, 128)).left >= 10  # the speck no longer stretches the box


def test_lung_field_grows_the_lungs_and_fades_outside():
    prob = _two_lungs()
    weights = lung_field(prob)
    assert weights.shape == prob.shape and weights.min() >= 0 and weights.max() <= 1
    assert weights[prob >= 0.5].min() == 1.0  # every lung pixel kept at full weight
    assert weights[50, 17] == 1.0  # 3 px outside a lung: inside the grown field
    assert weights[2, 2] == 0.0 and weights[125, 64] == 0.0  # far away: blacked out
    assert lung_field(np.zeros((SEG_SIZE, SEG_SIZE))) is None  # no lungs: nothing masked


def test_field_in_box_follows_the_box():
    prob = _two_lungs()
    box = lung_box(prob, (512, 512))
    weights = field_in_box(lung_field(prob), box.as_tuple(), (512, 512), 64)
    assert weights.shape == (64, 64) and weights[0, 0] == 0.0
    # The centre of the left lung (row 65, column 37 of 128) maps inside the box at full weight.
    y = round((65 / SEG_SIZE * 512 - box.top) / (box.bottom - box.top) * 64)
    x = round((37 / SEG_SIZE * 512 - box.left) / (box.right - box.left) * 64)
    assert weights[y, x] == pytest.approx(1.0)
    assert field_in_box(None, box.as_tuple(), (512, 512), 64) is None


def test_lung_fields_input_keeps_held_out_lungs_and_blacks_out_the_rest():
    """On real masks never used in training: the lung-fields input keeps the lungs, drops the frame."""
    imgs, masks, _ = load_pairs(get_paths().data_root / "cxr-lungs", "test")
    kept, dropped = [], []
    for img, mask in list(zip(imgs, masks, strict=True))[:12]:
        pixels, box = model_view(img, 128, "lung-fields")
        lung = crop_box(mask.astype(np.uint8) * 255, box, 128) >= 128
        whole, _ = model_view(img, 128, "lungs")
        visible = pixels > 0.9 * whole.astype(np.float32)
        kept.append(visible[lung & (whole > 10)].mean())
        dropped.append((pixels == 0)[~lung].mean())
    assert np.mean(kept) >= 0.97, kept
    assert np.mean(dropped) >= 0.3, dropped  # the box's corners and mediastinum are gone


def test_dice_of_known_masks():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(a, np.zeros_like(a)) == 0.0


def resize_square(img: np.ndarray, size: int, policy: str) -> np.ndarray:
    """The square resize the models were trained with before boxes existed: the reference."""
    pil = Image.fromarray(img)
    width, height = pil.size
    if policy == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        pil = pil.crop((left, top, left + side, top + side))
    elif policy == "letterbox":
        side = max(width, height)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(pil, ((side - width) // 2, (side - height) // 2))
        pil = canvas
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.uint8)


@pytest.mark.parametrize("policy", ["crop", "letterbox", "stretch"])
def test_box_path_is_pixel_identical_to_the_square_resize(policy):
    img = np.random.default_rng(0).integers(0, 256, (300, 410)).astype(np.uint8)
    assert np.array_equal(crop_box(img, input_box(img, policy), 64), resize_square(img, 64, policy))
    assert np.array_equal(prepare_image(img, 64, policy), resize_square(img, 64, policy))


def test_place_heatmap_maps_input_heat_back_onto_the_original():
    img = np.zeros((300, 400), np.uint8)
    heat = place_heatmap(np.ones((32, 32)), input_box(img, "crop"), img.shape)
    assert heat.shape == (300, 400) and heat[:, :50].sum() == 0 and heat[:, 350:].sum() == 0
    assert heat[:, 50:350].min() == 1.0
    letterbox = place_heatmap(np.ones((32, 32)), input_box(img, "letterbox"), img.shape)
    assert letterbox.min() == 1.0  # the bars fall outside the original


def test_shipped_segmenter_finds_the_lungs_of_held_out_masks():
    """Real masks never used in training: Dice and, what the classifier needs, lungs inside the box."""
    segmenter = default_segmenter()
    imgs, masks, _ = load_pairs(get_paths().data_root / "cxr-lungs", "test")
    scores = evaluate_segmenter(segmenter, imgs, masks)
    assert scores["n"] == 54
    assert scores["dice_mean"] >= 0.9, scores
    assert scores["lung_inside_box_mean"] >= 0.98, scores
    # The shipped card records what it was measured at, and agrees with this run.
    assert segmenter.info["test"]["dice_mean"] == pytest.approx(scores["dice_mean"], abs=0.01)


def test_shipped_segmenter_finds_lungs_in_every_class(full_data):
    """Boxes must be found for COVID-19 figures and NIH originals alike, or the fallback becomes a cue."""
    images = load_imageset(full_data, "test")
    segmenter = default_segmenter()
    for label, name in enumerate(images.classes):
        paths = [p for p, y in zip(images.paths, images.labels) if y == label][:20]
        boxes = segmenter.boxes([decode_image(p) for p in paths])
        assert np.mean([b.found for b in boxes]) >= 0.9, name


def test_train_segmenter_end_to_end_saves_a_loadable_model(tmp_path):
    root = tmp_path / "lungs"
    source = get_paths().data_root / "cxr-lungs"
    for split, n in (("train", 8), ("test", 3)):
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True)
        for mask in sorted((source / split / "masks").glob("*.png"))[:n]:
            shutil.copy(mask, root / split / "masks" / mask.name)
            shutil.copy(source / split / "images" / mask.with_suffix(".jpg").name, root / split / "images")
    out = tmp_path / "seg"
    epochs = []
    info = train_segmenter(root, out, epochs=2, batch_size=4, on_epoch=lambda e, logs: epochs.append(logs["loss"]))
    assert len(epochs) == 2 and all(np.isfinite(epochs))
    assert info["n_train"] == 8 and info["test"]["n"] == 3 and 0 <= info["test"]["dice_mean"] <= 1
    loaded = LungSegmenter.load(out)
    assert json.loads((out / "segmenter.json").read_text())["epochs"] == 2 and len(loaded.info["sha256"]) == 64
    assert not list(tmp_path.glob(".seg*")), "no staging folder left behind"


def test_missing_segmenter_is_a_typed_error(tmp_path):
    from cxr.errors import ModelError

    with pytest.raises(ModelError, match="No lung segmenter"):
        LungSegmenter.load(tmp_path)


@pytest.mark.parametrize("policy", ["lungs", "lung-square", "lung-fields"])
def test_lung_policy_dataset_matches_serving_exactly(mini_data, policy):
    """The training pipeline (boxes and fields found once per file) gives the served pixels."""
    images = load_imageset(mini_data, "test")
    images = images.subset(range(min(6, len(images))))
    batch = next(iter(make_dataset(images, 96, policy, batch_size=6)))[0].numpy()
    for i, path in enumerate(images.paths):
        served = prepare_image(decode_image(path), 96, policy)
        assert np.array_equal(batch[i, ..., 0].astype(np.uint8), served)


class _LeftHalfCrop:
    """Figure cues that always crop, deterministically: the left 60 % of the image."""

    def draw(self, rng, label=None):
        return ("crop",)

    def apply(self, img, kinds, rng):
        assert kinds == ("crop",)
        return np.ascontiguousarray(img[:, : img.shape[1] * 3 // 5])


@pytest.mark.parametrize("policy", ["lungs", "lung-square", "lung-fields"])
def test_crop_cue_is_applied_before_the_lungs_are_found(mini_data, policy):
    """A figure is cropped before anyone finds its lungs, so the training crop must be too: the
    pipeline's pixels are the served pixels of the cropped X-ray (box and field found on the crop)."""
    images = load_imageset(mini_data, "train")
    images = images.subset(range(min(4, len(images))))
    ds = make_dataset(images, 96, policy, batch_size=4, training=True, source_cues=_LeftHalfCrop())
    batch = next(iter(ds))[0].numpy()[..., 0].astype(np.uint8)
    served = {prepare_image(_LeftHalfCrop().apply(decode_image(p), ("crop",), None), 96, policy).tobytes()
              for p in images.paths}
    assert {x.tobytes() for x in batch} == served  # same set: training shuffles the order


def test_shipped_model_is_served_by_the_segmenter_it_was_trained_with(monkeypatch, tmp_path):
    from cxr.lungs import _load_cached, default_segmenter_dir
    from cxr.predict import Predictor
    from tests import factory

    predictor = Predictor.from_path(factory.shipped_path())
    assert predictor.card.resize_policy in LUNG_POLICIES and predictor.check_lung_segmenter()
    # Another segmenter (same weights, re-saved: another file) is noticed.
    other = tmp_path / "other-segmenter"
    shutil.copytree(default_segmenter_dir(), other)
    (other / "segmenter.keras").write_bytes((other / "segmenter.keras").read_bytes() + b"\0")
    monkeypatch.setenv("CXR_LUNG_SEGMENTER", str(other))
    _load_cached.cache_clear()
    try:
        assert not predictor.check_lung_segmenter()
    finally:
        _load_cached.cache_clear()
