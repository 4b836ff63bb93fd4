"""Every page through Streamlit's AppTest, with real uploads and a real (tiny) model."""

import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests import factory

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")


def run_page(page: str | None = None, timeout: float = 120) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page:
        at.switch_page(f"cxr/app/{page}")
        at.run()
    return at


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(str(c.value) for c in at.caption)


def test_predict_page_classifies_an_upload_with_overlay_and_templates(app_env):
    at = run_page()
    assert not at.exception
    threshold = next(s for s in at.slider if s.label == "COVID-19 threshold")
    assert "validation COVID-19 images: the true sensitivity could be as low as" in threshold.help
    image = sorted((app_env["mini"] / "train" / "PNEUMONIA").glob("*.jpg"))[0]
    at.file_uploader(key="uploads").set_value((image.name, image.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception and not at.error
    shown = texts(at)
    assert "### Predicted: " in shown
    label = shown.split("### Predicted: ")[1].split("\n")[0]
    assert label in ("COVID19", "NORMAL", "PNEUMONIA")
    assert "P(COVID-19) = " in shown
    images = at.get("image")
    # upload with its lung box (the tiny model crops to the lungs) + model input + overlay
    # + 3 templates + 3 difference images
    assert len(images) >= 9
    assert at.get("plotly_chart")
    assert any(b.label == "Download report (PNG)" for b in at.get("download_button"))


def test_threshold_help_and_test_sensitivity_count_patients_once(app_env):
    import json

    # The shipped model's case: its 14 validation COVID-19 images come from 7 patients or papers.
    card_file = next(app_env["store"].glob("*/card.json"))
    card = json.loads(card_file.read_text())
    card["metrics"]["calibration"].update(n_covid_validation=14, covid_found_validation=14, n_covid_validation_groups=7,
                                          covid_groups_found=7, covid_largest_group=8)
    card_file.write_text(json.dumps(card))
    # And the test split's COVID-19 images all from one paper, as serial films would be.
    manifest = app_env["mini"] / "manifest.csv"
    rows = manifest.read_text().splitlines()
    rows = [",".join(f.split(",")[:3] + ["one-paper"] + f.split(",")[4:]) if f.startswith("test/COVID19/") else f
            for f in rows]
    manifest.write_text("\n".join(rows) + "\n")
    at = run_page()
    threshold = next(s for s in at.slider if s.label == "COVID-19 threshold")
    assert "could be as low as 77%" in threshold.help
    assert "only 7 patients or publications (8 from one)" in threshold.help and "as low as 59%" in threshold.help
    at = run_page("evaluation_page.py", timeout=300)
    assert not at.exception and "counting each once (7 of 7 found), it could be as low as 59%" in texts(at)
    # "sensitivity 0.750 (3/4; 95% CI ..-..%; 0/1 counting each ...)": the paper counts as found only if all 4 are.
    found, n = texts(at).split("COVID-19 vs normal")[1].split("sensitivity ")[1].split("(")[1].split(";")[0].split("/")
    assert n == "4"
    assert f"; {int(found == n)}/1 counting each patient or publication once, 95% CI" in texts(at)


def test_a_small_upload_is_told_what_the_recorded_resolution_sweep_found(app_env):
    import io
    import json

    from PIL import Image

    # A sweep as `bench/resolution.py --record` stores it, at the card's own threshold.
    card_file = next(app_env["store"].glob("*/card.json"))
    card = json.loads(card_file.read_text())
    card["metrics"]["resolution"] = {
        "data": str(app_env["mini"]), "split": "validation", "threshold": card["covid_threshold"],
        "n": {"COVID19": 14}, "median_longest_side": {"COVID19": 512}, "clean_at_or_above_threshold": {"COVID19": 1.0},
        "by_side": {"160": {"COVID19": {"mean_rise": -0.43, "at_or_above_threshold": 0.14, "kept_at_or_above": 2 / 14,
                                        "shrunk": 14, "called_same": 0.5}},
                    "300": {"COVID19": {"mean_rise": -0.26, "at_or_above_threshold": 0.43, "kept_at_or_above": 6 / 14,
                                        "shrunk": 14, "called_same": 0.7}}}}
    card_file.write_text(json.dumps(card))
    image = sorted((app_env["mini"] / "train" / "PNEUMONIA").glob("*.jpg"))[0]
    small = image.read_bytes()  # 128 px, a small figure's size
    large = io.BytesIO()
    Image.open(image).resize((600, 600)).save(large, "PNG")  # larger than every side swept
    at = run_page()
    at.file_uploader(key="uploads").set_value([("small.jpg", small, "image/jpeg"),
                                               ("large.png", large.getvalue(), "image/png")])
    at.run()
    assert not at.exception and not at.error
    assert texts(at).count("### Predicted: ") == 2  # both read, neither flagged as not an X-ray
    notes = [w.value for w in at.warning if "This X-ray is small" in w.value]
    assert len(notes) == 1 and notes[0].startswith("This X-ray is small: 128 px on its longest side")
    assert "Shrunk to 160 px, 2 of the 14 it finds at full size" in notes[0]
    # The Evaluation page shows the recorded sweep beside the button that reruns it, without a clash.
    at = run_page("evaluation_page.py", timeout=300)
    assert not at.exception and "Resolution sweep recorded with the model" in texts(at)
    at.button(key="resolution").click()
    at.run(timeout=300)
    assert not at.exception and not at.error
    assert sum("longest side (px)" in d.value.columns for d in at.dataframe) == 2


def test_predict_page_warns_instead_of_diagnosing_a_non_xray(app_env):
    at = run_page()
    # Uniform noise: a PNG the decoder accepts, nothing like a chest X-ray.
    noise = np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)
    xray = sorted((app_env["mini"] / "train" / "NORMAL").glob("*.jpg"))[0]
    at.file_uploader(key="uploads").set_value([("noise.png", factory.png_bytes(noise), "image/png"),
                                               (xray.name, xray.read_bytes(), "image/jpeg")])
    at.run()
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning if "does not look like" in w.value]
    assert len(warnings) == 1 and "out-of-distribution score" in warnings[0]
    assert texts(at).count("### Predicted: ") == 1  # the X-ray gets its diagnosis, the noise none


def test_predict_page_reports_a_bad_file_and_still_classifies_the_others(app_env):
    at = run_page()
    good = sorted((app_env["mini"] / "train" / "NORMAL").glob("*.jpg"))[0]
    dicom = factory.dicom_bytes(factory.phantom(200, 160), photometric="MONOCHROME1", bits=8)
    at.file_uploader(key="uploads").set_value([
        ("notes.png", b"this is not an image", "image/png"),
        (good.name, good.read_bytes(), "image/jpeg"),
        ("IM0001", dicom, "application/octet-stream"),  # DICOM without extension: found by its DICM magic
    ])
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "notes.png cannot be analysed" in at.error[0].value
    assert "Doe" not in texts(at)  # the DICOM's patient name is never shown
    # Both decoded files get a result: a diagnosis, or (the synthetic phantom may be) an OOD warning.
    warned = [w for w in at.warning if "does not look like" in w.value]
    assert texts(at).count("### Predicted: ") + len(warned) == 2 and "### Predicted: " in texts(at)
    assert any(b.label == "Download all results (CSV)" for b in at.get("download_button"))
    # Above the results, one table of all files: the unreadable one with its reason, none left out.
    table = at.dataframe[0].value
    assert len(table) == 3 and list(table.columns[:4]) == ["file", "label", "p_COVID19", "covid_positive"]
    assert table["file"].tolist() == ["notes.png", good.name, "IM0001"]
    assert table["error"].notna().tolist() == [True, False, False] and table["label"].notna().tolist()[0] is False


def test_many_uploads_get_the_whole_table_and_full_results_only_for_the_files_picked(app_env):
    at = run_page()
    films = [f for c in ("NORMAL", "PNEUMONIA") for f in sorted((app_env["mini"] / "train" / c).glob("*.jpg"))[:3]]
    uploads = [(f.name, f.read_bytes(), "image/jpeg") for f in films[:3]]
    uploads += [("notes.png", b"not an image", "image/png")]
    uploads += [(f.name, f.read_bytes(), "image/jpeg") for f in films[3:]]
    at.file_uploader(key="uploads").set_value(uploads)
    at.run()
    assert not at.exception

    def detailed() -> list[str]:
        return [h.value for h in at.main.subheader]

    # Every file is in the table (and its CSV); the unreadable one says why, at once.
    table = at.dataframe[0].value
    assert table["file"].tolist() == [u[0] for u in uploads]
    assert len(at.error) == 1 and "notes.png cannot be analysed" in at.error[0].value
    # Full results for the first four readable files only, and a picker numbered as the table is.
    picker = at.multiselect(key="detail-files")
    assert picker.options == [f"{i}. {u[0]}" for i, u in enumerate(uploads, 1) if u[0] != "notes.png"]
    assert picker.value == picker.options[:4]
    assert detailed() == [f.name for f in films[:4]]
    # Picking the last file shows it (and only what was picked); the table still has all seven.
    picker.set_value([picker.options[-1]])
    at.run()
    assert not at.exception and detailed() == [films[-1].name]
    assert len(at.dataframe[0].value) == 7 and len(at.error) == 1


def test_predict_page_reads_a_pacs_export_like_the_uncompressed_file(app_env):
    # A radiograph as PACS sends it: 12 bits, MONOCHROME1, JPEG Lossless, no file extension.
    from PIL import Image

    xray = sorted((app_env["mini"] / "test" / "COVID19").glob("*"))[0]
    plain = factory.cr_film(np.asarray(Image.open(xray).convert("L")))
    packed = factory.compressed_dicom(plain, "JPEGLosslessProcess14_1")
    at = run_page()
    at.file_uploader(key="uploads").set_value([("plain.dcm", plain, "application/dicom"),
                                               ("IM0002", packed, "application/octet-stream")])
    at.run()
    assert not at.exception and not at.error
    results = [line for line in texts(at).splitlines() if line.startswith("### Predicted: ")]
    assert len(results) == 2 and results[0] == results[1]
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 2 and charts[0].proto.spec == charts[1].proto.spec  # the same probabilities


def test_predict_page_switching_method_and_class_keeps_working(app_env):
    at = run_page()
    image = sorted((app_env["mini"] / "train" / "COVID19").glob("*.jpg"))[0]
    at.file_uploader(key="uploads").set_value((image.name, image.read_bytes(), "image/jpeg"))
    at.run()
    for method in ("gradcam++", "scorecam", "smoothgrad"):
        at.selectbox(key="method").set_value(method)
        at.run()
        assert not at.exception, method
    explain = next(s for s in at.selectbox if s.key.startswith("explain-"))
    explain.set_value("COVID19")
    at.run()
    assert not at.exception
    assert any("Grad" in c.value or "Smooth" in c.value or "Score" in c.value for c in at.caption) or at.get("image")


def test_templates_page_shows_one_template_per_class(app_env):
    at = run_page("templates_page.py")
    assert not at.exception
    assert len(at.get("image")) == 3


def test_evaluation_page_shows_metrics_and_eda(app_env):
    at = run_page("evaluation_page.py", timeout=300)
    assert not at.exception
    assert [m.label for m in at.metric][:4] == ["Accuracy", "Balanced accuracy", "Macro AUROC", "ECE"]
    assert "95% CI" in texts(at)  # test sensitivity and specificity come with their uncertainty
    assert len(at.get("plotly_chart")) >= 5  # confusion, ROC, calibration, balance, scatter, aspect


def test_evaluation_page_runs_the_shortcut_probe(app_env, tiny_model):
    at = run_page("evaluation_page.py", timeout=300)
    at.tabs[1]  # "Shortcuts and calibration"
    assert "What this model may be learning" in texts(at) and "Calibration" in texts(at)
    from cxr.predict import Predictor

    card = Predictor.from_path(tiny_model).card
    assert f"COVID-19 threshold {card.covid_threshold:.3f}, set for 95% validation sensitivity." in texts(at)
    assert "the true sensitivity could be as low as" in texts(at)
    assert "chosen on clean and figure-like validation loss together" in texts(at)
    assert "Out-of-distribution gate:" in texts(at) and "as journal figures" in texts(at)
    assert "Stored as another hospital might:" in texts(at) and "Selection figure between models" in texts(at)
    at.button(key="threshold-images").click()
    at.run(timeout=300)
    assert not at.exception and not at.error
    assert "so the lowest sets it" in texts(at)
    shown = next(d.value for d in at.dataframe if "p_covid" in d.value.columns)
    assert list(shown.columns) == ["file", "group", "p_covid", "called", "p_called"]
    assert list(shown["p_covid"]) == sorted(shown["p_covid"])
    assert set(shown["called"]) <= {"COVID19", "NORMAL", "PNEUMONIA"}
    at.button(key="resolution").click()
    at.run(timeout=300)
    assert not at.exception and not at.error
    assert any("shrunk to a journal figure's longest side" in c.value for c in at.caption)
    sweep = next(d.value for d in at.dataframe if "longest side (px)" in d.value.columns)
    assert {160, 420} <= set(sweep["longest side (px)"]) and sweep["at or above the threshold"].between(0, 1).all()
    kept = sweep["of those at or above as stored, still there"]
    assert (kept.isna() | kept.between(0, 1)).all()
    # As stored, a class with any image at or above the threshold keeps all of them; one with none has none to keep.
    stored = sweep[~sweep["longest side (px)"].isin([160, 220, 300, 420])]
    assert not stored.empty and ((stored["at or above the threshold"] > 0) == kept[stored.index].eq(1)).all()
    at.button(key="run-probe").click()
    at.run(timeout=300)
    assert not at.exception and not at.error
    labels = [m.label for m in at.metric]
    assert "Figure-like normals kept below threshold" in labels and "Grad-CAM heat in the outer border" in labels
    border_help = next(m for m in at.metric if m.label == "Grad-CAM heat in the outer border").help
    assert "drawn on this heatmap's own" in border_help  # the yardstick at the map's grid
    assert any("a yardstick, never an operating point" in c.value for c in at.caption)
    assert at.dataframe  # the per-variant table


def test_validation_buttons_on_another_dataset_say_which_data_they_need(app_env):
    """The threshold and resolution buttons read the model's own validation split: on another dataset
    (here the mini set less one image) each says so in the page, not a traceback."""
    import shutil

    other = app_env["data_root"] / "other"
    shutil.copytree(app_env["mini"], other)
    next((other / "train" / "NORMAL").iterdir()).unlink()
    at = run_page("evaluation_page.py", timeout=300)
    at.selectbox[0].set_value(other)
    at.run(timeout=300)
    assert not at.exception
    for key, reads in (("threshold-images", "the threshold was fitted on"),
                        ("resolution", "the sweep reads the validation split of")):
        at.button(key=key).click()
        at.run(timeout=300)
        assert not at.exception
        message = at.error[-1].value
        assert "is not the data" in message and f"({reads} the data the model was trained on" in message


def test_about_page_states_intended_use_and_bias(app_env):
    at = run_page("about_page.py")
    assert not at.exception
    assert "not a medical device" in at.error[0].value
    assert "may learn the hospital, not the disease" in texts(at)
    assert "**Threshold evidence.**" in texts(at) and "the true sensitivity could be as low as" in texts(at)


def test_an_active_ensemble_classifies_explains_and_names_its_members(app_env, tiny_model):
    from cxr.ensemble import make_ensemble
    from cxr.store import ModelStore

    store = ModelStore(app_env["store"])
    store.save(*make_ensemble([tiny_model, tiny_model], "tiny-twice"))
    store.activate("tiny-twice")
    at = run_page()
    image = sorted((app_env["mini"] / "train" / "NORMAL").glob("*.jpg"))[0]
    at.file_uploader(key="uploads").set_value((image.name, image.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception and not at.error
    assert "### Predicted: " in texts(at) and len(at.get("image")) >= 9  # the overlay among them
    at = run_page("about_page.py")
    assert not at.exception
    assert "The average of: **tiny**" in texts(at)
    assert any(m.value == "2 x cxrnet" for m in at.metric)


def test_no_model_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_MODEL_DIR", str(tmp_path))
    at = run_page()
    assert not at.exception
    assert "No model is available" in at.error[0].value


@pytest.mark.timeout(600)
def test_retrain_page_trains_evaluates_and_activates(app_env):
    at = run_page("retrain_page.py")
    assert not at.exception
    assert at.selectbox(key="dataset").value.name == "cxr-data-mini"
    at.number_input[0].set_value(1)  # epochs
    at.number_input[3].set_value(64)  # image size
    from cxr.train import TrainConfig

    assert at.selectbox(key="framing").value == TrainConfig.resize_policy  # the library's default
    at.selectbox(key="framing").set_value("lung-fields")
    at.slider(key="crop-others").set_value(0.5)
    assert at.selectbox(key="intensity").value == TrainConfig.intensity
    at.selectbox(key="intensity").set_value("equalize")
    assert at.checkbox(key="lung-gate").value == TrainConfig.lung_gate
    at.checkbox(key="lung-gate").check()
    assert at.checkbox(key="fine-map").value == TrainConfig.fine_map
    at.checkbox(key="fine-map").check()
    assert at.selectbox(key="threshold-rule").value == TrainConfig.threshold_rule
    at.selectbox(key="threshold-rule").set_value("groups")
    assert at.checkbox(key="same-detail").value == (TrainConfig.detail_side is not None)
    at.checkbox(key="same-detail").check()
    at.button[0].click()  # form submit
    at.run()
    assert not at.exception and not at.error
    from cxr.app.resources import job_runner

    job = job_runner().job
    deadline = time.time() + 400
    while not job.finished and time.time() < deadline:
        time.sleep(1)
    assert job.status == "done", job.error
    at.run()
    shown = texts(at)
    assert f"Saved as **{job.result.name}**" in "\n".join(s.value for s in at.success)
    assert "new model vs the active one" in shown
    assert (f"COVID-19 threshold {job.result.card.covid_threshold:.3f}, set for 95% validation sensitivity, "
            "each patient or publication counted once." in shown)
    assert job.result.card.metrics["calibration"]["threshold_rule"] == "groups"
    compared = next(d.value for d in at.dataframe if "COVID-19 threshold" in d.value.columns)
    assert compared.loc["new", "COVID-19 threshold"] == job.result.card.covid_threshold
    robust = next(d.value for d in at.dataframe if "selection figure" in d.value.columns)
    assert list(robust.index) == ["new", "active"]
    assert robust.loc["new", "validation log-loss"] == job.result.card.metrics["calibration"]["nll_after"]
    # The mini set's 128 px X-rays are smaller than 300 px: the sweep measured nothing there, so no figure.
    assert robust["COVID-19 found, still found at 300 px"].isna().all()
    assert "of normals below the COVID-19 threshold (clean" in shown  # figure-like validation
    assert set(job.evaluation) == {"new", "active"} and job.evaluation["new"]["n"] == 12
    assert job.result.card.resize_policy == "lung-fields"
    assert job.result.card.training["config"]["crop_others"] == 0.5
    assert job.result.card.training["config"]["intensity"] == "equalize"
    from cxr.store import load_model

    trained = load_model(job.result.path)[0]
    # The input is blurred to half its side (cxr.model.detail_cap), then equalised.
    assert [layer.name for layer in trained.layers[1:4]] == ["detail_down", "detail_up", "equalize"]
    assert trained.get_layer("detail_down").get_config()["height"] == 32 and trained.get_layer("lung_gate")
    assert job.result.card.training["config"]["detail_side"] == 32
    assert job.result.card.training["config"]["lung_gate"] is True
    assert job.result.card.training["config"]["fine_map"] is True
    assert job.result.card.training["config"]["threshold_rule"] == "groups"
    side = job.result.card.image_size
    assert trained.get_layer("lung_gate").output.shape[1:3] == (side // 16, side // 16)  # the finer grid
    at.button(key="activate-new").click()
    at.run()
    assert (app_env["store"] / "ACTIVE").read_text().strip() == job.result.name
    # Roll back: the previous default is listed with an Activate button.
    rollback = [b for b in at.button if b.key and b.key.startswith("act-")]
    assert rollback
    rollback[0].click()
    at.run()
    assert (app_env["store"] / "ACTIVE").read_text().strip() != job.result.name


def test_every_file_of_the_bad_corpus_gets_its_own_error_in_the_app(app_env, tmp_path):
    from tests.test_bad_input import bad_corpus

    corpus = bad_corpus(tmp_path)
    at = run_page()
    at.file_uploader(key="uploads").set_value([(name, data, "application/octet-stream")
                                               for name, data in corpus.items()])
    at.run()
    assert not at.exception
    assert len(at.error) == len(corpus)
    for name, error in zip(corpus, at.error):
        assert error.value.startswith(f"{name} cannot be analysed: ")


def test_retrain_page_says_what_a_job_does_after_its_epochs(app_env):
    from cxr.app.resources import job_runner
    from cxr.jobs import TrainingJob
    from cxr.store import ModelStore
    from cxr.train import TrainConfig

    runner = job_runner()
    job = TrainingJob(TrainConfig(data=app_env["mini"], epochs=3), ModelStore(app_env["store"]))
    job.epoch, job.stage = 3, "finishing"  # a job between its last epoch and saving
    previous, runner.job = runner.job, job
    try:
        at = run_page("retrain_page.py")
        assert not at.exception
        (progress,) = at.get("progress")
        assert "3 epochs done; calibrating, scoring validation as figures" in progress.proto.text
        assert "fitting the out-of-distribution gate" in progress.proto.text
        assert progress.proto.value == 100
    finally:
        runner.job = previous


def test_retrain_page_confirms_a_cancel_at_once_and_disables_the_button(app_env):
    from cxr.app.resources import job_runner
    from cxr.jobs import TrainingJob
    from cxr.store import ModelStore
    from cxr.train import TrainConfig

    runner = job_runner()
    job = TrainingJob(TrainConfig(data=app_env["mini"], epochs=3), ModelStore(app_env["store"]))
    job.epoch = 1  # a job in its second epoch; no thread runs it, so nothing finishes behind the test
    previous, runner.job = runner.job, job
    try:
        at = run_page("retrain_page.py")
        assert not at.exception and not at.info
        assert at.button(key="cancel").disabled is False
        at.button(key="cancel").click()
        at.run()
        assert job.cancelling and job.status == "running"
        assert any(h.value.endswith(": cancelling") for h in at.subheader)
        assert at.info[0].value.startswith("Cancelling: the current epoch finishes")
        assert at.button(key="cancel").disabled is True
    finally:
        runner.job = previous


def test_retrain_page_deletes_a_saved_model_after_asking_but_offers_no_delete_for_the_shipped_one(app_env):
    import shutil

    store = app_env["store"]
    shipped = (store / "DEFAULT").read_text().strip()
    shutil.copytree(store / shipped, store / "spare")
    at = run_page("retrain_page.py")
    assert not at.exception
    keys = {b.key for b in at.button if b.key}
    assert "confirm-delete-spare" in keys and f"confirm-delete-{shipped}" not in keys
    assert (store / "spare").is_dir()  # opening the page deleted nothing
    at.button(key="confirm-delete-spare").click()
    at.run()
    assert not at.exception and not at.error
    assert not (store / "spare").exists() and (store / shipped / "model.keras").is_file()
    assert "confirm-delete-spare" not in {b.key for b in at.button if b.key}


def test_retrain_page_offers_no_delete_for_a_member_of_the_shipped_ensemble(app_env):
    import json
    import shutil

    store = app_env["store"]
    shipped = (store / "DEFAULT").read_text().strip()
    shutil.copytree(store / shipped, store / "member")
    card = json.loads((store / shipped / "card.json").read_text())
    card["training"]["ensemble_of"] = [{"name": "member"}]
    (store / shipped / "card.json").write_text(json.dumps(card))
    at = run_page("retrain_page.py")
    assert not at.exception
    assert f"**member** — shipped, in {shipped}" in texts(at)
    keys = {b.key for b in at.button if b.key}
    assert "act-member" in keys and "confirm-delete-member" not in keys
