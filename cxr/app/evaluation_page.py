"""Evaluation: the active model on held-out data, plus a look at the data itself (EDA)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from cxr import selection
from cxr.acquisition import describe as describe_acquisition
from cxr.app.charts import confusion_heatmap, reliability_diagram, roc_curves
from cxr.app.resources import active_model_path, load_explainer, load_predictor
from cxr.calibration import describe_threshold
from cxr.config import get_paths
from cxr.data import load_imageset
from cxr.datasets import list_datasets
from cxr.decode import decode_image
from cxr.eda import aspect_separability, image_statistics
from cxr.errors import CxrError
from cxr.metrics import COVID as COVID_CLASS
from cxr.metrics import reliability_bins, roc_points
from cxr.ood import describe as describe_gate
from cxr.probe import figure_probe, heat_location, lung_masks, may_learn
from cxr.report import metrics_by_normal_source
from cxr.resolution import recorded_sweep, resolution_sweep
from cxr.threshold_report import describe_lowest, threshold_report


@st.cache_data(show_spinner="Evaluating the model on the test split...", max_entries=4)
def evaluate(model_path: str, data: str) -> tuple[dict, dict, tuple, dict]:
    predictor = load_predictor(model_path)
    images, probs, labels, metrics = predictor.evaluate(data, "test")
    by_source = metrics_by_normal_source(images, probs, labels, predictor.card.covid_threshold)
    return metrics, roc_points(probs, labels, predictor.classes), reliability_bins(probs, labels, 10), by_source


@st.cache_data(show_spinner="Running the shortcut probe: ten versions of every test normal and pneumonia. A minute "
                             "for one network on a CPU; up to 20 minutes for an ensemble scoring several views...",
               max_entries=4)
def run_probe(model_path: str, data: str) -> dict:
    predictor = load_predictor(model_path)
    images = load_imageset(data, "test", predictor.classes)
    masks = lung_masks(get_paths().data_root / "cxr-lungs", "test")
    return {"probe": figure_probe(predictor, images),
            "heat": heat_location(predictor, load_explainer(model_path), images, masks)}


def original_frame(heat: dict) -> tuple[float, float | None, float | None]:
    """Border heat, lung heat and lung area on the original X-ray (older records: the model input)."""
    if "border_original_mean" in heat:
        return heat["border_original_mean"], heat.get("lungs_original_mean"), heat.get("lung_area_original_mean")
    return heat["border_mean"], heat.get("lungs_mean"), heat.get("lung_area_mean")


def _yardstick(heat: dict) -> str:
    """The border figure's context, where the probe recorded it (older cards lack it)."""
    view, lungs_only = heat.get("border_even_view_mean"), heat.get("border_lungs_only_mean")
    text = f" Spread evenly over what this model sees: {view:.0%}." if view is not None else ""
    if lungs_only is not None:
        text += f" Spread evenly over the true lung fields only: {lungs_only:.0%}."
    lung_cells, side = heat.get("border_lung_cells_mean"), heat.get("map_side")
    if lung_cells is not None and side is not None:
        text += (f" Spread evenly over the lungs the segmenter finds, drawn on this heatmap's own {side}x{side} "
                 f"grid: {lung_cells:.0%}, the least a map that coarse can show while covering the lungs.")
    return text


def _counted(binary: dict, rate: str, count: str) -> str:
    """' (25/25; 95% CI 86-100%)' for a rate in `binary_covid_metrics` (older results: '')."""
    if binary.get(f"{rate}_ci") is None:
        return ""
    n = binary[count]
    lo, hi = binary[f"{rate}_ci"]
    grouped = ""
    groups = binary.get("covid_groups") if rate == "sensitivity" else None
    if groups and groups < n:  # serial films of one patient are not independent evidence
        g_lo, g_hi = binary["sensitivity_group_ci"]
        grouped = (f"; {binary['covid_groups_found']}/{groups} counting each patient or publication once, "
                   f"95% CI {g_lo * 100:.0f}-{g_hi:.0%}")
    return f" ({round(binary[rate] * n)}/{n}; 95% CI {lo * 100:.0f}-{hi:.0%}{grouped})"


def show_probe(result: dict) -> None:
    probe, heat = result["probe"], result["heat"]
    c = st.columns(3)
    below = probe.get("normal_journal_figure_below_threshold")
    if below is not None:
        c[0].metric("Figure-like normals kept below threshold", f"{below:.1%}",
                    help="NORMAL test images degraded like journal figures whose P(COVID19) stays below the "
                         f"operating threshold {probe['threshold']:.2f}. The goal is at least 95%.")
    oracle = probe.get("oracle")
    if below is not None and oracle:
        st.caption(f"At a threshold fitted to these {oracle['n_covid']} test COVID-19 images for 95% sensitivity "
                   f"({oracle['threshold']:.2f}; a yardstick, never an operating point), "
                   f"{oracle['normal_journal_figure_below']:.1%} of figure-like normals would stay below it. The "
                   "normals still above that threshold are the model's discrimination; the rest of the gap "
                   "comes from the threshold set on validation.")
    border, lungs, area = original_frame(heat)
    c[1].metric("Grad-CAM heat in the outer border", f"{border:.1%}",
                help=f"Share of saliency in the outer {heat['border_width']:.0%} frame of the uploaded X-ray "
                     "(heat mapped back from the model input; none where the model saw nothing). Heat spread "
                     f"evenly would put {heat['uniform_border']:.0%} there. Letters, markers and edges live there."
                     + _yardstick(heat))
    if lungs is not None:
        c[2].metric("Heat inside the lung fields", f"{lungs:.1%}",
                    help=f"On the {heat['n_with_lung_mask']} test normals with a lung mask; the lungs cover "
                         f"{area:.0%} of the frame on average.")
    rows = [{"class": name, "variant": variant, **figures} for name, per in probe["classes"].items()
            for variant, figures in per.items() if isinstance(figures, dict)]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


@st.cache_data(show_spinner="Scoring the validation COVID-19 images...", max_entries=4)
def threshold_images(model_path: str, data: str) -> dict:
    return threshold_report(load_predictor(model_path), Path(data))


def on_validation(label: str, key: str, show, reads: str) -> None:
    """A button that runs `show` on the active model's recorded validation split; a dataset that is not the
    model's own gets a message saying what `reads` the model's training data, not a traceback."""
    if st.button(label, key=key):
        try:
            show()
        except CxrError as exc:
            st.error(f"{exc} ({reads} the data the model was trained on; choose that dataset above)")


@st.cache_data(show_spinner="Scoring the validation X-rays at each resolution...", max_entries=4)
def resolution_report(model_path: str, data: str) -> dict:
    from cxr.train import recorded_split

    predictor = load_predictor(model_path)
    return resolution_sweep(predictor, recorded_split(predictor.card, Path(data))[1])


def show_resolution(report: dict, key: str = "resolution-chart") -> None:
    """Per class, the share of validation X-rays at or above the threshold as they shrink to a figure's size."""
    # The images as stored sit at their median longest side, with no change.
    kept = "of those at or above as stored, still there"
    rows = [{"class": name, "longest side (px)": report["median_longest_side"][name],
             "at or above the threshold": share, kept: 1.0 if share else None, "mean change of P(COVID-19)": 0.0}
            for name, share in report["clean_at_or_above_threshold"].items()]
    rows += [{"class": name, "longest side (px)": int(side), "at or above the threshold": f["at_or_above_threshold"],
              kept: f["kept_at_or_above"], "mean change of P(COVID-19)": f["mean_rise"]}
             for side, per in report["by_side"].items() for name, f in per.items()]
    frame = pd.DataFrame(rows).sort_values(["class", "longest side (px)"])
    st.caption(f"Each validation X-ray shrunk to a journal figure's longest side and back, at the threshold "
               f"{report['threshold']:.3f}. For COVID-19 the line is the sensitivity a figure of that size would "
               "get; for the other classes, the share flagged. The point at each class's median size is the images as "
               "stored. The table also follows the films found as stored: those a figure of that size would lose. "
               "Validation only.")
    st.plotly_chart(px.line(frame, x="longest side (px)", y="at or above the threshold", color="class",
                            markers=True, range_y=[0, 1.02]), key=key)
    st.dataframe(frame, hide_index=True)


def show_threshold_images(report: dict) -> None:
    """The validation COVID-19 images behind the threshold, lowest first, and each group left out."""
    images = report["images"]
    if report.get("threshold_rule") == "groups":
        how = (f"Each patient or publication weighs one, its images sharing that weight, and the threshold "
               f"({report['refitted_threshold']:.3f}) is the highest that keeps "
               f"{report['target_sensitivity']:.0%} of that weight at or above it. ")
    else:
        how = (f"With fewer than 20, every one must clear a threshold for {report['target_sensitivity']:.0%} "
               f"sensitivity, so the lowest sets it ({report['refitted_threshold']:.3f}). ")
    st.caption(f"The {len(images)} validation COVID-19 images from {report['groups']} patients or publications, "
               f"lowest P(COVID-19) first. {how}A film that shows little still counts, "
               "as the label is the patient's diagnosis, not the film's finding.")
    cols = st.columns(4)
    for col, image in zip(cols, images[:4], strict=False):
        # Decoded, not the file's bytes: a dataset may hold DICOM, which a browser cannot show.
        col.image(decode_image(image["path"]), caption=f"P(COVID-19) {image['p_covid']:.3f}, called "
                  f"{image['called']} ({image['p_called']:.0%}): {image['file']} ({image['group']})", width="stretch")
    if note := describe_lowest(report):
        st.info(note)
    st.dataframe(pd.DataFrame([{k: v for k, v in i.items() if k != "path"} for i in images]), hide_index=True)
    left_out = pd.DataFrame([{"group left out": name, **figures}
                             for name, figures in report["threshold_without_group"].items()])
    st.markdown("**The threshold refitted with each group left out** (one that jumps rests on that group)")
    st.dataframe(left_out, hide_index=True)


@st.cache_data(show_spinner="Reading image statistics...", max_entries=4)
def statistics(data: str) -> list[dict]:
    return image_statistics(load_imageset(data, "train"))


st.title("Evaluation")
path = active_model_path()
datasets = list_datasets(get_paths().data_root)
datasets = [d for d in datasets if (d / "test").is_dir()]
if path is None or not datasets:
    st.warning("Evaluation needs an active model and a dataset with a test/ split under the data folder.")
    st.stop()
root = get_paths().data_root
data = st.selectbox("Dataset", datasets, format_func=lambda p: str(p.relative_to(root)))
tab_metrics, tab_shortcuts, tab_eda = st.tabs(["Model metrics", "Shortcuts and calibration", "Data (EDA)"])

with tab_metrics:
    st.caption("Internal test (same sources as training). It cannot show whether the model learned the disease "
               "or the hospital an image came from; see the About page.")
    try:
        metrics, curves, bins, by_source = evaluate(path, str(data))
    except CxrError as exc:
        st.error(str(exc))
        st.stop()
    c = st.columns(4)
    c[0].metric("Accuracy", f"{metrics['accuracy']:.3f}")
    c[1].metric("Balanced accuracy", f"{metrics['balanced_accuracy']:.3f}")
    c[2].metric("Macro AUROC", f"{metrics['macro_auroc']:.3f}" if metrics["macro_auroc"] else "n/a")
    c[3].metric("ECE", f"{metrics['ece']:.3f}")
    recorded = load_predictor(path).card.metrics.get("shortcut_probe")
    if recorded:
        below = recorded["probe"].get("normal_journal_figure_below_threshold")
        border = original_frame(recorded["heat"])[0]
        st.markdown(f"Shortcut probe (recorded with the model): **{below:.1%}** of normals made to look like journal "
                    f"figures stay below the COVID-19 threshold; **{border:.1%}** of Grad-CAM heat falls in the "
                    f"outer border (see the *Shortcuts and calibration* tab).")
    if metrics["binary"]:
        b = metrics["binary"]
        st.markdown(f"COVID-19 vs normal (n={b['n']}): AUROC **{b['auroc']:.3f}**, sensitivity "
                    f"{b['sensitivity']:.3f}{_counted(b, 'sensitivity', 'n_covid')}, specificity "
                    f"{b['specificity']:.3f}{_counted(b, 'specificity', 'n_normal')} at threshold {b['threshold']:.2f}")
    left, right = st.columns(2)
    left.markdown("**Confusion matrix**")
    left.plotly_chart(confusion_heatmap(metrics["confusion"]["labels"], metrics["confusion"]["matrix"]),
                      key="confusion")
    right.markdown("**ROC (one vs rest)**")
    right.plotly_chart(roc_curves(curves), key="roc")
    left.markdown("**Per class**")
    left.dataframe(pd.DataFrame(metrics["per_class"]).T)
    right.markdown("**Calibration**")
    right.plotly_chart(reliability_diagram(*bins), key="calibration")
    if by_source:
        st.markdown("**By source of the normal images** (all COVID-19 and pneumonia images, plus one source's "
                    "normals): a model that tells hospitals apart scores very differently here.")
        st.dataframe(pd.DataFrame([{"normal source": k, "normals": v["n_normal"], "accuracy": v["accuracy"],
                                    "macro AUROC": v["macro_auroc"],
                                    "COVID vs normal AUROC": (v["binary"] or {}).get("auroc")}
                                   for k, v in by_source.items()]), hide_index=True)

with tab_shortcuts:
    card = load_predictor(path).card
    st.markdown("**What this model may be learning**")
    st.markdown(may_learn(card))
    calibration = card.metrics.get("calibration")
    if calibration:
        # describe_threshold is '' for a model without a COVID-19 class, which has no such threshold.
        st.markdown(f"**Calibration** (fitted on validation): temperature {calibration['temperature']:.3f}, "
                    f"ECE {calibration['ece_before']:.3f} before and {calibration['ece_after']:.3f} after. "
                    + describe_threshold(card.covid_threshold, calibration))
        if COVID_CLASS in card.classes:
            on_validation("Show the validation images behind the threshold", "threshold-images",
                          lambda: show_threshold_images(threshold_images(path, str(data))),
                          "the threshold was fitted on")
            swept = recorded_sweep(card)
            if swept:
                where = f"{swept['data']}, validation" if swept.get("data") else "its validation split"
                st.markdown(f"**Resolution sweep recorded with the model** (on {where})")
                show_resolution(swept, key="recorded-resolution-chart")
            on_validation("Follow P(COVID-19) down to a figure's resolution", "resolution",
                          lambda: show_resolution(resolution_report(path, str(data))),
                          "the sweep reads the validation split of")
    gate = describe_gate(card)
    if gate:
        st.markdown(f"**Out-of-distribution gate:** {gate}")
    held_up = describe_acquisition(card)
    if held_up:
        st.markdown(f"**Stored as another hospital might:** {held_up}")
    chosen = selection.describe(card)
    if chosen:
        st.markdown(f"**Model selection:** {chosen}")
    recorded = card.metrics.get("shortcut_probe")
    if recorded:
        st.markdown(f"**Shortcut probe recorded with the model** (on {recorded['data']}, {recorded['split']})")
        show_probe(recorded)
    if st.button("Run the shortcut probe on this dataset now", key="run-probe"):
        try:
            show_probe(run_probe(path, str(data)))
        except CxrError as exc:
            st.error(str(exc))

with tab_eda:
    rows = statistics(str(data))
    frame = pd.DataFrame(rows)
    st.markdown("**Class balance (training split)**")
    st.plotly_chart(px.bar(frame.groupby("class").size().reset_index(name="images"), x="class", y="images"),
                    key="balance")
    st.markdown("**Intensity statistics against the label**")
    st.plotly_chart(px.scatter(frame, x="mean", y="std", color="class", hover_data=["file", "source"], opacity=0.6),
                    key="intensity")
    separability = aspect_separability(rows)
    st.markdown("**Aspect ratio by class** (a source cue, not a disease cue)" +
                (f": COVID19-vs-rest AUROC of |log aspect| = {separability:.2f}" if separability else ""))
    st.plotly_chart(px.box(frame, x="class", y="aspect", points="all"), key="aspect")
