"""Test-time views: which boxes, how they are averaged, and that every serving path scores them alike."""

import json
import shutil

import numpy as np
import pytest

from cxr.errors import ModelError
from cxr.views import IDENTITY, average, check_views, describe, grid, view_boxes

NINE = grid((0.92, 1, 1.08), 0.04)


def test_grid_puts_the_box_itself_first_and_one_view_is_no_views():
    assert NINE[0] == IDENTITY and len(NINE) == 9 and len(set(NINE)) == 9
    assert (1.08, -0.04, 0.0) in NINE and (0.92, 0.04, 0.0) in NINE
    assert grid((1.0,)) == [] and grid() == []
    assert grid((1.08, 1, 0.92))[0] == IDENTITY


@pytest.mark.parametrize("views, message", [
    ([(1.1, 0, 0), (1, 0, 0)], "first test-time view must be the box itself"),
    ([(1, 0, 0), (1.6, 0, 0)], "too far from the box"),
    ([(1, 0, 0), (1, 0.3, 0)], "too far from the box"),
    ([(1, 0, 0), (1, 0, 0)], "repeat"),
    ([(1, 0)], "three numbers"),
])
def test_views_far_from_what_training_showed_are_refused(views, message):
    with pytest.raises(ModelError, match=message):
        check_views(views)


def test_view_boxes_scale_about_the_centre_and_shift_by_the_side():
    box = (100, 50, 300, 250)  # 200 px square
    assert view_boxes(box, []) == [box]
    assert view_boxes(box, [IDENTITY, (1.1, 0, 0), (1, 0.05, -0.05)]) == [box, (90, 40, 310, 260),
                                                                         (110, 40, 310, 240)]


def test_average_is_the_softmax_of_the_views_mean_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 5))  # 4 images, 3 views, 5 classes
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mean = logits.mean(1)
    expected = np.exp(mean) / np.exp(mean).sum(-1, keepdims=True)
    np.testing.assert_allclose(average(probs.reshape(12, 5), 3), expected, rtol=1e-9)


def test_describe_names_the_scales_and_the_shift():
    assert describe([]) == ""
    assert describe(NINE) == ("probabilities averaged over 9 views (the box scaled by 0.92, 1, 1.08, "
                              "shifted by up to 4% of its side)")


@pytest.mark.parametrize("policy", ["crop", "lungs", "lung-fields"])
def test_view_zero_is_exactly_the_single_view_and_larger_boxes_show_real_pixels(mini_data, policy):
    from cxr.decode import decode_image
    from cxr.preprocess import model_view, model_view_stacks

    path = sorted((mini_data / "test" / "COVID19").glob("*"))[0]
    img = decode_image(path)
    stack, stack_box = model_view_stacks([img], 64, policy, NINE)[0]
    single, box = model_view(img, 64, policy)
    assert stack_box == box
    assert stack.shape == (9, 64, 64) and stack.dtype == np.uint8
    np.testing.assert_array_equal(stack[0], single)
    assert all(not np.array_equal(stack[0], view) for view in stack[1:])
    if policy == "crop" and img.shape[1] > img.shape[0] * 1.1:
        # The central square of a wide X-ray, scaled up, takes in real pixels at the sides (not black).
        wider = stack[NINE.index((1.08, 0.0, 0.0))]
        assert wider[:, :2].mean() > 0 and wider[:, -2:].mean() > 0


def test_figure_like_views_carry_the_same_cues_as_the_single_view(mini_data):
    from cxr.data import figure_like, load_imageset
    from cxr.shortcut import SourceCues

    images = load_imageset(mini_data, "test")
    images = images.subset(np.arange(min(6, len(images))))
    single, labels = figure_like(images, 64, "lungs", SourceCues(p=1.0), seed=3)
    stacks, same_labels = figure_like(images, 64, "lungs", SourceCues(p=1.0), seed=3, views=NINE)
    assert stacks.shape == (len(single), 9, 64, 64)
    np.testing.assert_array_equal(labels, same_labels)
    np.testing.assert_array_equal(stacks[:, 0], single)


@pytest.fixture(scope="module")
def predictors(tiny_model):
    """The tiny model served plainly and with nine views (temperature 1, so the average is visible)."""
    from cxr.predict import Predictor
    from cxr.store import load_model

    model, card = load_model(tiny_model)
    card.temperature = 1.0
    plain = Predictor(model, card)
    viewed_card = type(card)(**{**card.__dict__, "test_time_views": [list(v) for v in NINE]})
    return plain, Predictor(model, viewed_card)


def test_a_model_with_views_scores_the_mean_logits_of_its_views_on_every_path(predictors, mini_data):
    from cxr.data import load_imageset
    from cxr.decode import decode_image
    from cxr.preprocess import model_view_stacks, to_model_input

    plain, viewed = predictors
    images = load_imageset(mini_data, "test")
    paths = list(images.paths)
    imgs = [decode_image(p) for p in paths]
    size, policy = plain.card.image_size, plain.card.resize_policy
    stacks = np.stack([stack for stack, _ in model_view_stacks(imgs, size, policy, NINE)])
    per_view = np.stack([plain.predict_batch(to_model_input(stacks[:, k])) for k in range(9)], axis=1)
    expected = average(per_view.reshape(-1, per_view.shape[-1]), 9)

    probs, features = viewed.infer_images(imgs)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert not np.allclose(probs, per_view[:, 0], atol=1e-3)  # the views do move the scores
    # What bench/views.py compares view sets with: each view's own scores, in the card's order.
    np.testing.assert_allclose(viewed.per_view_probs(iter(imgs), batch_size=3), per_view, atol=1e-5)
    assert plain.per_view_probs(imgs).shape == (len(imgs), 1, len(plain.classes))
    # The OOD gate's features are the box's own, as a single-view model computes them.
    np.testing.assert_allclose(features, plain.infer_images(imgs)[1], atol=1e-5)
    np.testing.assert_allclose(viewed.gate_features(imgs), features, atol=1e-5)  # the gate's shortcut: view 0 alone
    np.testing.assert_allclose(viewed.infer_imageset(images, 4, views=False)[2], features, atol=1e-5)

    streamed = list(viewed.predict_stream(paths, batch_size=4))
    got = np.array([[r["probabilities"][c] for c in viewed.classes] for r in streamed])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    one = viewed.predict_file(paths[0])
    assert [one["probabilities"][c] for c in viewed.classes] == pytest.approx(expected[0], abs=1e-5)
    set_probs, labels = viewed.predict_imageset(images, batch_size=4)
    np.testing.assert_allclose(set_probs, expected, atol=1e-5)
    np.testing.assert_array_equal(labels, images.labels)


def test_infer_images_holds_one_batch_of_images_and_views_at_a_time(predictors, mini_data):
    from cxr.decode import decode_image

    _, viewed = predictors
    paths = sorted((mini_data / "test").glob("*/*"))[:7]
    pulled, pulled_at_inference = [], []
    real_infer = viewed.infer

    def images():
        for path in paths:
            pulled.append(path)
            yield decode_image(path)

    def counting_infer(x):
        pulled_at_inference.append((len(pulled), len(x)))
        return real_infer(x)

    viewed.infer = counting_infer
    try:
        probs, _ = viewed.infer_images(images(), batch_size=3)
    finally:
        del viewed.infer
    # Batches of 3, 3 and 1 images, each scored before the next one is decoded.
    assert pulled_at_inference == [(3, 3), (6, 3), (7, 1)]
    np.testing.assert_allclose(probs, viewed.infer_images([decode_image(p) for p in paths])[0], atol=1e-6)


def test_the_predict_page_path_scores_views_and_explains_the_box(predictors, mini_data):
    from cxr.decode import decode_image
    from cxr.pipeline import analyze

    plain, viewed = predictors
    path = sorted((mini_data / "test" / "NORMAL").glob("*"))[0]
    result = analyze(viewed, path.read_bytes(), path.name)
    np.testing.assert_allclose(result.probs, viewed.infer_images([decode_image(path)])[0][0], atol=1e-5)
    np.testing.assert_array_equal(result.prepared, plain.prepare(decode_image(path)))


def test_calibrate_sets_views_refits_the_threshold_and_can_drop_them(tiny_model, tmp_path):
    from tests.test_cli import run_cli

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    before = json.loads((model / "card.json").read_text())
    out = run_cli("calibrate", "--model", model, "--test-time-scales", "0.92,1,1.08", "--test-time-shift", "0.04")
    assert out.returncode == 0, out.stderr
    card = json.loads((model / "card.json").read_text())
    printed = json.loads(out.stdout)["test_time_views"]
    assert [tuple(v) for v in card["test_time_views"]] == NINE == [tuple(v) for v in printed]
    assert "averaged over 9 views" in card["preprocessing"]
    assert card["metrics"]["calibration"]["nll_after"] != pytest.approx(before["metrics"]["calibration"]["nll_after"])

    refused = run_cli("calibrate", "--model", model, "--test-time-scales", "1,2.5")
    assert refused.returncode == 2 and "too far from the box" in refused.stderr and "Traceback" not in refused.stderr
    assert json.loads((model / "card.json").read_text()) == card  # nothing rewritten

    out = run_cli("calibrate", "--model", model, "--test-time-scales", "1")
    assert out.returncode == 0, out.stderr
    card = json.loads((model / "card.json").read_text())
    assert card["test_time_views"] == [] and card["covid_threshold"] == pytest.approx(before["covid_threshold"])
    assert card["temperature"] == pytest.approx(before["temperature"])
