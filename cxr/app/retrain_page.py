"""Retrain: pick a dataset under the data root, train in the background, compare, activate."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from cxr import selection
from cxr.app.charts import training_curves
from cxr.app.resources import clear_model_caches, job_runner, model_store
from cxr.calibration import THRESHOLD_RULES, describe_threshold
from cxr.config import get_paths
from cxr.data import load_imageset
from cxr.datasets import list_datasets
from cxr.errors import CxrError
from cxr.model import ARCHITECTURES, DEFAULT_IMAGE_SIZE, INTENSITIES
from cxr.preprocess import RESIZE_POLICIES
from cxr.train import TrainConfig

st.title("Retrain")
root = get_paths().data_root
store = model_store()
runner = job_runner()

datasets = list_datasets(root)
if not datasets:
    st.warning(f"No dataset folders found under the data folder {root}. A dataset needs train/<CLASS>/ sub-folders.")
else:
    choice = st.selectbox("Dataset", datasets, format_func=lambda p: str(p.relative_to(root)), key="dataset")
    try:
        counts = load_imageset(choice, "train").counts()
        st.dataframe(pd.DataFrame({"class": list(counts), "training images": list(counts.values())}),
                     hide_index=True)
    except CxrError as exc:
        st.error(str(exc))
        counts = {}
    # The form starts at the library's defaults, so the app and `python -m cxr train` agree.
    framings = {"lungs": "Lung box",
                "lung-square": "Lung box, square (padded, never stretched)",
                "lung-fields": "Lung fields only (rest blacked out)",
                "crop": "Central square", "letterbox": "Letterbox (whole image, black bars)",
                "stretch": "Stretch (the reference design; distorts non-square images)"}
    with st.form("train-form"):
        c1, c2, c3 = st.columns(3)
        arch = c1.selectbox("Architecture", sorted(ARCHITECTURES), index=sorted(ARCHITECTURES).index("cxrnet"))
        epochs = c2.number_input("Epochs", 1, 200, TrainConfig.epochs)
        batch = c3.number_input("Batch size", 2, 256, TrainConfig.batch_size)
        lr = c1.number_input("Learning rate", 1e-5, 1e-1, TrainConfig.learning_rate, format="%.5f")
        size = c2.number_input("Image size (0 = architecture default)", 0, 512, 0, step=32)
        augment = c3.checkbox("Augmentation", TrainConfig.augment)
        patience = c1.number_input("Early-stopping patience (epochs)", 1, 200, TrainConfig.patience)
        cues = c2.slider("Figure-cue augmentation", 0.0, 1.0, TrainConfig.source_cues, 0.05,
                         help="Share of training images of every class made to look like journal figures "
                              "(downscaled, compressed, cropped, letters, arrows, borders), so the look of "
                              "the image stops predicting COVID-19. 0 = the plain recipe.")
        crop_others = c1.slider("Figure crop on the other classes", 0.0, 1.0, TrainConfig.crop_others, 0.05,
                                key="crop-others",
                                help="Share of the NORMAL and PNEUMONIA training images also cropped tight like "
                                     "a figure. Every COVID-19 image in the public collections is a cropped "
                                     "figure, so a frame close to the lungs can otherwise mark COVID-19.")
        framing = c3.selectbox("Framing", RESIZE_POLICIES, format_func=framings.get, key="framing",
                               index=RESIZE_POLICIES.index(TrainConfig.resize_policy),
                               help="What part of each X-ray the model sees. The lung policies use the lung "
                                    "segmenter, so a hospital's framing and the letters, borders and markers "
                                    "outside the lungs cannot mark the class.")
        intensity = c2.selectbox("Grey levels", INTENSITIES, key="intensity",
                                 index=INTENSITIES.index(TrainConfig.intensity),
                                 format_func={"standardize": "standardise (mean and contrast)",
                                              "equalize": "equalise (any exposure curve)"}.get,
                                 help="How cxrnet normalises each X-ray's grey levels. Equalisation gives the "
                                      "same input whatever a hospital's detector or windowing does to the grey "
                                      "levels, as long as it keeps their order.")
        lung_gate = c3.checkbox("Decide from the lungs only", TrainConfig.lung_gate, key="lung-gate",
                                help="cxrnet averages its final features over the lung fields a segmenter inside "
                                     "the model finds, not over the whole box, so letters and edges around the "
                                     "lungs cannot carry the decision on their own. Its Grad-CAM then sits on "
                                     "the lungs by construction.")
        fine_map = c3.checkbox("Finer heatmaps", TrainConfig.fine_map, key="fine-map",
                               help="cxrnet's last stage works on a 14x14 grid instead of 7x7 (at 224 px), so "
                                    "Grad-CAM cells are half as wide and heat on a lung's edge spills less "
                                    "over the box's edge. With 'Decide from the lungs only' this met the "
                                    "border-heat target over three seeds, but those models were less accurate.")
        same_detail = c3.checkbox("Same detail for every source", TrainConfig.detail_side is not None,
                                  key="same-detail",
                                  help="cxrnet blurs each X-ray to half its input side and back before reading it, "
                                       "so a sharp hospital original and a small journal figure reach it with the "
                                       "same detail and sharpness cannot mark COVID-19. Measured in the models' "
                                       "README (bench/resolution.py).")
        threshold_rule = c1.selectbox("COVID-19 threshold counts", THRESHOLD_RULES, key="threshold-rule",
                                      index=THRESHOLD_RULES.index(TrainConfig.threshold_rule),
                                      format_func={"images": "each validation image once",
                                                   "groups": "each patient or publication once"}.get,
                                      help="The threshold is the highest that still finds 95 % of the validation "
                                           "COVID-19 X-rays. Counted per patient or publication, a paper with "
                                           "many films of a few patients cannot set it alone; the manifest's "
                                           "group_id names the groups (without one, each image is its own).")
        submitted = st.form_submit_button("Start training", type="primary", disabled=not counts)
    if submitted:
        try:
            config = TrainConfig(data=choice, arch=arch, epochs=int(epochs), batch_size=int(batch),
                                 learning_rate=float(lr), image_size=int(size) or None,
                                 augment=augment, patience=int(patience), source_cues=float(cues),
                                 crop_others=float(crop_others), intensity=intensity,
                                 lung_gate=lung_gate, fine_map=fine_map, resize_policy=framing,
                                 detail_side=(int(size) or DEFAULT_IMAGE_SIZE[arch]) // 2 if same_detail else None,
                                 threshold_rule=threshold_rule,
                                 command=f"app: retrain on {choice.name}")
            runner.start(config, store)
        except (CxrError, ValueError) as exc:
            st.error(str(exc))


def comparison_row(metrics: dict) -> dict:
    """One model's line in the new-vs-active table: each model at its own operating point."""
    binary = metrics.get("binary") or {}
    return {"model": metrics.get("model"), "accuracy": metrics.get("accuracy"),
            "macro AUROC": metrics.get("macro_auroc"), "COVID-vs-normal AUROC": binary.get("auroc"),
            "COVID-19 threshold": binary.get("threshold"), "sensitivity": binary.get("sensitivity"),
            "specificity": binary.get("specificity"), "ECE": metrics.get("ece")}


def show_job(live: bool) -> None:
    """The current job's progress and result; `live` = redrawn every 2 s while it runs."""
    job = runner.job
    if job is None:
        return
    if live and job.finished:
        # Redraw the whole page once, so this panel stops polling a job that has ended.
        st.rerun(scope="app")
    st.subheader(f"Training on {job.config.data.name}: {'cancelling' if job.cancelling else job.status}")
    stages = {"finishing": "calibrating, scoring validation as figures and as other hospitals' X-rays, "
                           "fitting the out-of-distribution gate and the templates",
              "evaluating": f"evaluating the new and the active model on {job.config.data.name}/test"}
    doing = stages.get(job.stage) if not job.finished else None
    st.progress(1.0 if doing else min(job.epoch / job.config.epochs, 1.0),
                text=(f"{job.epoch} epochs done; {doing}" if doing else f"epoch {job.epoch} of {job.config.epochs}")
                + f" ({time.time() - job.started:.0f} s)")
    if job.cancelling:
        # The click was received: say so, since saving and evaluating can take minutes on a busy machine.
        st.info("Cancelling: the current epoch finishes, then the best model so far is calibrated, saved and "
                "evaluated. Nothing is lost; the active model stays active.")
    if job.history:
        st.plotly_chart(training_curves(job.history), key="curves")
    if not job.finished:
        # on_click runs before this rerun draws the page, so the page shows "cancelling" at once.
        st.button("Cancel training", key="cancel", on_click=job.cancel, disabled=job.cancelling)
        return
    if job.status == "failed":
        st.error(f"Training failed: {job.error}")
        return
    st.success(f"Saved as **{job.result.name}**" + (" (stopped early by you)" if job.status == "cancelled" else ""))
    chosen = selection.describe(job.result.card)
    if chosen:
        st.markdown(chosen)
    threshold = describe_threshold(job.result.card.covid_threshold, job.result.card.metrics.get("calibration") or {})
    if threshold:
        st.markdown(threshold)
    if job.evaluation:
        table = {role: comparison_row(m) for role, m in job.evaluation.items() if "error" not in m}
        st.markdown("**Test split (same sources as training):** new model vs the active one")
        st.dataframe(pd.DataFrame(table).T)
        recorded = {role: m["validation"] for role, m in job.evaluation.items() if m.get("validation")}
        if recorded:
            # What the test split cannot show: how each leans on the source (each on its own validation split).
            st.markdown("**Validation, as each model's card records it:** shortcuts and robustness")
            st.dataframe(pd.DataFrame(recorded).T, key="validation-compared")
    if st.button(f"Activate {job.result.name}", type="primary", key="activate-new"):
        try:
            store.activate(job.result.name)
        except CxrError as exc:  # e.g. deleted from the list below meanwhile
            st.error(str(exc))
            return
        clear_model_caches()
        st.rerun(scope="app")


# Poll only while a job runs: a finished or absent job needs no redraws, and on two cores
# every 2-second rerun of every open Retrain page costs the predicting sessions time.
training = runner.job is not None and not runner.job.finished
st.fragment(show_job, run_every=2.0 if training else None)(live=training)

st.subheader("Saved models")
active, shipped, members = store.active_or_none(), store.default_name(), store.shipped_members()
for stored in store.list():
    val = stored.card.metrics.get("validation", {})
    cols = st.columns([3, 2, 2, 1, 1])
    cols[0].markdown(f"**{stored.name}**" + (" — active" if stored.name == active else "")
                     + (" — shipped" if stored.name == shipped else "")
                     + (f" — shipped, in {shipped}" if stored.name in members else ""))
    cols[1].caption(f"{stored.card.arch}, {stored.card.image_size} px, {stored.card.created[:16]}")
    cols[2].caption(f"val. accuracy {val.get('accuracy', float('nan')):.3f}" if val else "no metrics")
    if stored.name != active and cols[3].button("Activate", key=f"act-{stored.name}"):
        store.activate(stored.name)
        clear_model_caches()
        st.rerun()
    if stored.name in (active, shipped) or stored.name in members:
        continue  # the active model, the shipped fallback and its members are never deleted from here
    # A popover asks again, so one stray click cannot remove a trained model.
    with cols[4].popover("Delete", key=f"delete-{stored.name}"):
        st.markdown(f"Delete **{stored.name}** and its files for good?")
        if st.button(f"Delete {stored.name}", type="primary", key=f"confirm-delete-{stored.name}"):
            try:
                store.delete(stored.name)
            except CxrError as exc:
                st.error(str(exc))
            else:
                clear_model_caches()
                st.rerun()
