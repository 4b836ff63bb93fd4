"""Shortcut probe (cxr.probe): heat location maths and a real probe run on a trained model."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.data import load_imageset
from cxr.predict import Predictor
from cxr.preprocess import place_heatmap
from cxr.probe import VARIANTS, figure_probe, heat_fractions, heat_location
from cxr.saliency import Explainer


def test_heat_fractions_of_known_maps():
    size = 100
    uniform = heat_fractions(np.ones((size, size)))
    assert abs(uniform["border"] - 0.36) < 1e-9 and abs(uniform["centre"] - 0.36) < 1e-9
    corner = np.zeros((size, size))
    corner[:5, :5] = 1
    assert heat_fractions(corner)["border"] == 1.0 and heat_fractions(corner)["centre"] == 0.0
    centre = np.zeros((size, size))
    centre[45:55, 45:55] = 1
    mask = np.zeros((size, size), bool)
    mask[40:60, 40:50] = True
    f = heat_fractions(centre, mask)
    assert f["border"] == 0.0 and f["centre"] == 1.0 and abs(f["lungs"] - 0.5) < 1e-9
    assert abs(f["lung_area"] - 0.02) < 1e-9
    assert np.isnan(heat_fractions(np.zeros((size, size)))["border"])


def test_oracle_threshold_splits_discrimination_from_the_operating_point():
    from cxr.probe import oracle_operating_point

    covid = np.array([0.05] + [0.6] * 19)  # 20 images: 95 % sensitivity allows one miss
    normals = np.array([0.1, 0.2, 0.3, 0.7])
    oracle = oracle_operating_point(covid, normals, normals + 0.35)
    assert oracle["threshold"] == 0.6 and oracle["covid_at_or_above"] == 0.95
    assert oracle["normal_clean_below"] == 0.75 and oracle["normal_journal_figure_below"] == 0.5
    # One more low COVID-19 score: the cut must fall to keep 95 %, and lets fewer normals below.
    tighter = oracle_operating_point(np.array([0.05, 0.2] + [0.6] * 18), normals, normals)
    assert tighter["threshold"] == 0.2 and tighter["normal_clean_below"] == 0.25


def test_probe_and_heat_location_on_a_trained_model(tiny_model, mini_data, tmp_path):
    predictor = Predictor.from_path(tiny_model)
    images = load_imageset(mini_data, "test", predictor.classes)
    probe = figure_probe(predictor, images)
    normal = probe["classes"]["NORMAL"]
    assert normal["n"] == images.labels.count(images.classes.index("NORMAL"))
    assert set(VARIANTS) | {"n", "clean"} == set(normal)
    for variant in VARIANTS:
        figures = normal[variant]
        assert 0 <= figures["mean_p_covid"] <= 1 and 0 <= figures["below_threshold"] <= 1
    assert probe["passes"] == (probe["normal_journal_figure_below_threshold"] >= 0.95)
    oracle = probe["oracle"]
    assert oracle["n_covid"] == images.labels.count(images.classes.index("COVID19"))
    assert oracle["covid_at_or_above"] >= 0.95 and 0 <= oracle["normal_journal_figure_below"] <= 1
    # Same seed, same degradations, same answer: the probe compares models fairly.
    assert figure_probe(predictor, images) == probe

    # A lung mask for one NORMAL test image (its left half), found by file name.
    from tests import factory

    normal_path = next(p for p, y in zip(images.paths, images.labels) if images.classes[y] == "NORMAL")
    masks_dir = tmp_path / "test" / "masks"
    masks_dir.mkdir(parents=True)
    from cxr.decode import decode_image

    height, width = decode_image(normal_path).shape
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    (masks_dir / (normal_path.stem + ".png")).write_bytes(factory.png_bytes(mask))
    from cxr.probe import lung_masks

    masks = lung_masks(tmp_path, "test")
    assert normal_path.with_suffix(".jpg").name in masks
    heat = heat_location(predictor, Explainer(predictor.model, predictor.card.arch), images, masks)
    assert heat["n"] == len(images) and 0 <= heat["border_mean"] <= 1
    assert heat["n_with_lung_mask"] == 1 and 0 <= heat["lungs_mean"] <= 1
    # In the original frame the mask is exactly half the image, whatever the model cropped.
    assert heat["lung_area_original_mean"] == pytest.approx(0.5, abs=0.01)
    assert 0 <= heat["border_original_mean"] <= 1
    # Yardsticks: even heat over a left-half mask puts 1 - (0.4 x 0.8) / 0.5 = 0.36 in the 10 % frame.
    assert heat["border_lungs_only_mean"] == pytest.approx(0.36, abs=0.02)
    assert 0 < heat["border_even_view_mean"] <= 1
    assert heat["map_side"] == Explainer(predictor.model, predictor.card.arch).map_side()
    assert 0 <= heat["border_lung_cells_mean"] <= 1


def test_shipped_model_ignores_journal_figure_cues(full_data):
    """Normal X-rays made to look like figures must not move towards COVID-19 or away from it, and neither
    may a tight crop alone (the cue the centre-crop models kept: +0.27 to +0.40 mean rise).

    Threshold-free on purpose: the share below the operating threshold also counts the clean normals
    the threshold already calls positive (see models/README.md), which is specificity, not shortcut.
    """
    from tests import factory

    predictor = Predictor.from_path(factory.shipped_path())
    # Only the two cues asserted on: the shipped model scores three views per image, so all ten take minutes more.
    probe = figure_probe(predictor, load_imageset(full_data, "test", predictor.classes),
                         variants=("journal_figure", "crop"))
    normal = probe["classes"]["NORMAL"]
    assert normal["n"] > 100
    # Either way: every external COVID-19 image is a journal figure, so a model that learnt "figure-like,
    # so not COVID-19" (a crop-others run fell by -0.12) would miss them. It reads the source just the same.
    assert -0.03 <= normal["journal_figure"]["mean_rise"] <= 0.03, normal["journal_figure"]
    assert -0.10 <= normal["crop"]["mean_rise"] <= 0.10, normal["crop"]
    # As many figure-like normals stay below the threshold as clean ones, within 3 points.
    assert normal["journal_figure"]["below_threshold"] >= normal["clean"]["below_threshold"] - 0.03


def test_shipped_cards_resolution_sweep_is_current_and_what_the_model_does(full_data):
    """The Predict page tells a small upload what the recorded sweep found (`small_image_note`), so the
    record must be made at the card's threshold and match the model: rerun at 300 px here."""
    from cxr.resolution import recorded_sweep, resolution_sweep, small_image_note
    from cxr.train import recorded_split
    from tests import factory

    predictor = Predictor.from_path(factory.shipped_path())
    record = recorded_sweep(predictor.card)
    assert record is not None, "recalibrated since? rerun: python bench/resolution.py --model cxrnet-ensemble --record"
    fresh = resolution_sweep(predictor, recorded_split(predictor.card, full_data)[1], [300])
    n_covid = fresh["n"]["COVID19"]
    assert fresh["n"] == record["n"] and fresh["median_longest_side"] == record["median_longest_side"]
    for name, now in fresh["by_side"][300].items():
        then = record["by_side"]["300"][name]
        assert now["mean_rise"] == pytest.approx(then["mean_rise"], abs=0.005)
        # Shares of at most 88 images: a film on the threshold may flip on another CPU, no more.
        assert now["at_or_above_threshold"] == pytest.approx(then["at_or_above_threshold"], abs=1.01 / n_covid)
    found = round(record["clean_at_or_above_threshold"]["COVID19"] * n_covid)
    kept = round(record["by_side"]["300"]["COVID19"]["kept_at_or_above"] * found)
    assert f"Shrunk to 300 px, {kept} of the {found} it finds" in small_image_note(predictor.card, 256)


def test_may_learn_describes_the_models_own_recipe():
    from cxr.card import ModelCard
    from cxr.probe import may_learn

    lungs = may_learn(ModelCard("a", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs",
                                training={"config": {"source_cues": 0.5}}))
    plain = may_learn(ModelCard("b", "cxrnet", ["COVID19", "NORMAL"], 224, "crop",
                                training={"config": {"source_cues": 0.0}}))
    assert "lung fields" in lungs and "with figure cues" in lungs
    assert "central square" in plain and "without figure cues" in plain
    assert all("kind of image" in text for text in (lungs, plain))
    gated = may_learn(ModelCard("c", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs",
                                training={"config": {"source_cues": 0.5, "lung_gate": True}}))
    assert "pooled over the lung fields" in gated and "pooled over" not in lungs
    viewed = may_learn(ModelCard("d", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs",
                                 test_time_views=[[1, 0, 0], [1.08, 0, 0], [0.92, 0, 0]],
                                 training={"config": {"source_cues": 0.5}}))
    assert "average 3 views of that box (scaled by 0.92, 1, 1.08)" in viewed and "views" not in lungs
    shifted = may_learn(ModelCard("d", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs",
                                  test_time_views=[[1, 0, 0], [1, 0.04, 0], [1, -0.04, 0]],
                                  training={"config": {"source_cues": 0.5}}))
    assert "(scaled by 1 and shifted)" in shifted and "shifted" not in viewed
    capped = may_learn(ModelCard("e", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs",
                                 training={"config": {"source_cues": 0.5, "detail_side": 112}}))
    assert "blurred to 112x112 px" in capped and "sharpness itself" not in capped
    assert all("sharpness itself can mark the source" in text for text in (lungs, plain, gated, viewed))
    # With a current resolution sweep on the card, what a figure's size costs it, in its own numbers.
    from tests.test_resolution import card_with_sweep

    swept = card_with_sweep()
    assert "Of the 14 validation COVID-19 films it finds as stored, 6 stay at or above its threshold shrunk to " \
           "300 px" in may_learn(swept)
    assert "films it finds" not in lungs and "films it finds" not in may_learn(card_with_sweep(threshold=0.2))


def test_even_lung_heat_spreads_over_the_frame_as_its_grid_coarsens():
    """The yardstick behind the border target: lungs that stay out of the 10 % frame still put heat
    there once a coarse grid draws them, and the coarser the grid the more."""
    from cxr.lungs import SEG_SIZE
    from cxr.probe import even_lung_heat

    yy, xx = np.mgrid[0:SEG_SIZE, 0:SEG_SIZE] / SEG_SIZE
    prob = np.zeros((SEG_SIZE, SEG_SIZE), np.float32)
    for centre in (0.29, 0.71):  # two lungs, 0.13 to 0.87 of the width, 0.15 to 0.85 of the height
        prob[((xx - centre) / 0.16) ** 2 + ((yy - 0.5) / 0.35) ** 2 <= 1] = 1.0
    shape, box = (300, 300), (0, 0, 300, 300)
    border = {cells: heat_fractions(place_heatmap(even_lung_heat(prob, box, shape, 224, cells), box, shape))["border"]
              for cells in (7, 14, 28, 224)}
    assert border[224] < 0.01  # drawn at full resolution the lungs stay out of the frame
    assert border[7] > border[14] > border[28] > border[224]
    assert border[7] > 0.05
    assert even_lung_heat(np.zeros_like(prob), box, shape, 224, 7) is None  # no lungs found
