"""What the Predict page says about a small upload, from the resolution sweep recorded on the card."""

from cxr.card import ModelCard
from cxr.resolution import recorded_sweep, small_image_note


def card_with_sweep(threshold: float = 0.28, recorded_at: float = 0.28, found: float = 1.0) -> ModelCard:
    # The shipped model's shape: 14 validation COVID-19 films at 512 px, all found as stored.
    sweep = {"threshold": recorded_at, "n": {"COVID19": 14, "NORMAL": 88},
             "median_longest_side": {"COVID19": 512, "NORMAL": 512},
             "clean_at_or_above_threshold": {"COVID19": found, "NORMAL": 0.06},
             "by_side": {side: {"COVID19": {"mean_rise": rise, "kept_at_or_above": kept if found else None,
                                            "shrunk": 14},
                                "NORMAL": {"mean_rise": -0.01, "kept_at_or_above": 1.0}}
                         for side, rise, kept in (("160", -0.43, 2 / 14), ("300", -0.26, 6 / 14),
                                                  ("420", -0.1, 11 / 14))}}
    return ModelCard("m", "cxrnet", ["COVID19", "NORMAL"], 224, "lungs", covid_threshold=threshold,
                     metrics={"resolution": sweep})


def test_a_small_upload_is_told_what_the_smallest_swept_side_at_or_above_it_kept():
    card = card_with_sweep()
    note = small_image_note(card, 250)
    assert note.startswith("This X-ray is small: 250 px on its longest side")
    assert "median 512 px" in note and "Shrunk to 300 px, 6 of the 14 it finds" in note
    assert "threshold 0.28" in note and "-0.26" in note
    assert "Shrunk to 160 px, 2 of the 14" in small_image_note(card, 100)  # smaller than every side: the smallest
    assert "Shrunk to 300 px" in small_image_note(card, 300)  # exactly a swept side


def test_no_note_for_a_full_size_upload_a_stale_or_missing_sweep_or_nothing_found():
    assert small_image_note(card_with_sweep(), 421) is None  # larger than every swept side
    stale = card_with_sweep(threshold=0.2)  # recalibrated since the sweep was recorded
    assert recorded_sweep(stale) is None and small_image_note(stale, 250) is None
    assert small_image_note(ModelCard("m", "cxrnet", ["COVID19", "NORMAL"], 224), 250) is None
    assert small_image_note(card_with_sweep(found=0.0), 250) is None  # no film found to follow
    unmeasured = card_with_sweep()
    unmeasured.metrics["resolution"]["by_side"]["300"]["COVID19"]["shrunk"] = 0  # every validation film <= 300 px
    assert small_image_note(unmeasured, 250) is None and "Shrunk to 160 px" in small_image_note(unmeasured, 150)


def test_training_records_the_sweep_on_validation_skipping_unreadable_files(tiny_model, mini_data, tmp_path):
    """`finalize` (train, calibrate, ensemble) stores the sweep at the fitted threshold, so a retrained
    model's Predict page can warn too. The mini set's X-rays are 128 px, smaller than every swept side:
    nothing is shrunk, so the record says nothing about a small upload, and no note is made up."""
    from cxr.data import ImageSet
    from cxr.predict import Predictor
    from cxr.resolution import SIDES, resolution_sweep

    card = Predictor.from_path(tiny_model).card
    record = recorded_sweep(card)
    assert record is not None and record["split"] == "validation" and record["threshold"] == card.covid_threshold
    assert record["data"] == card.training["data"]["path"]
    assert sorted(int(side) for side in record["by_side"]) == list(SIDES)
    assert all(per["COVID19"]["shrunk"] == 0 for per in record["by_side"].values())
    assert small_image_note(card, 100) is None
    # A broken file in the split is left out, as training leaves it out, instead of stopping the sweep.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    covid = sorted((mini_data / "test" / "COVID19").glob("*.jpg"))[:2]
    images = ImageSet([*covid, broken], [0, 0, 0], card.classes)
    sweep = resolution_sweep(Predictor.from_path(tiny_model), images, sides=(64,))
    assert sweep["n"] == {"COVID19": 2} and sweep["by_side"][64]["COVID19"]["shrunk"] == 2


def test_predictions_carry_the_size_and_the_small_image_flag_the_page_warns_on(tiny_model, mini_data, tmp_path):
    """`predict_file` and `predict_stream` (the CLI's --json and --csv) flag a small X-ray as the Predict
    page does, from the card's recorded sweep; one that measured nothing (128 px validation) flags nothing."""
    import json
    import shutil

    from PIL import Image

    from cxr.predict import Predictor

    image = sorted((mini_data / "test" / "NORMAL").glob("*.jpg"))[0]
    large = tmp_path / "large.png"
    Image.open(image).resize((600, 500)).save(large)
    side = max(Image.open(image).size)
    plain = Predictor.from_path(tiny_model).predict_file(image)
    assert plain["longest_side_px"] == side and plain["small_image"] is False
    model = shutil.copytree(tiny_model, tmp_path / "swept")
    card = json.loads((model / "card.json").read_text())
    card["metrics"]["resolution"] = card_with_sweep(threshold=card["covid_threshold"],
                                                    recorded_at=card["covid_threshold"]).metrics["resolution"]
    (model / "card.json").write_text(json.dumps(card))
    swept = Predictor.from_path(model)
    one = swept.predict_file(image.read_bytes(), image.name)
    assert one["small_image"] is (not one["ood"]) and one["longest_side_px"] == side <= 420
    streamed = {r["file"]: r for r in swept.predict_stream([image, large], batch_size=2)}
    assert streamed[str(large)]["longest_side_px"] == 600 and streamed[str(large)]["small_image"] is False
    assert streamed[str(image)]["small_image"] is one["small_image"]


def test_the_retrain_pages_validation_row_quotes_the_recorded_sweep_only_where_it_measured():
    from cxr.selection import validation_row

    row = validation_row(card_with_sweep())
    assert row["COVID-19 found, still found at 300 px"] == 6 / 14
    assert row["validation log-loss"] is None and row["COVID-19 at or above threshold, darker"] is None
    stale = card_with_sweep(threshold=0.2)  # recalibrated since: the record no longer describes it
    assert validation_row(stale)["COVID-19 found, still found at 300 px"] is None
    unmeasured = card_with_sweep()
    unmeasured.metrics["resolution"]["by_side"]["300"]["COVID19"]["shrunk"] = 0
    assert validation_row(unmeasured)["COVID-19 found, still found at 300 px"] is None
