"""Predict (home): upload X-rays -> class, probabilities, saliency overlay, templates, report."""

from __future__ import annotations

import csv
import functools
import io

import numpy as np
import streamlit as st

from cxr.app.charts import probability_bars
from cxr.app.resources import active_model_path, load_explainer, load_model_templates, load_predictor
from cxr.calibration import grouped_evidence_note, rule_words, threshold_evidence
from cxr.errors import CxrError
from cxr.pipeline import analyze, boxed_png, explain, overlay_png, result_row
from cxr.preprocess import LUNG_POLICIES
from cxr.report_image import render_report
from cxr.resolution import small_image_note
from cxr.saliency import METHODS
from cxr.views import describe as describe_views


def remember(key: tuple, compute, *args):
    """Per-session memo: a rerun (a slider moved, a file added) does not recompute old uploads.

    Kept in st.session_state, so one user's images and results are never visible to another.
    """
    memo = st.session_state.setdefault("memo", {})
    if key not in memo:
        if len(memo) > 200:
            memo.clear()
        memo[key] = compute(*args)
    return memo[key]


st.title("Chest X-ray classification")
path = active_model_path()
if path is None:
    st.stop()
predictor = load_predictor(path)
card = predictor.card

with st.sidebar:
    st.subheader("Display")
    method = st.selectbox("Saliency method", list(METHODS), format_func=METHODS.get, key="method")
    opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
    calibration = card.metrics.get("calibration") or {}
    evidence = threshold_evidence(calibration)
    uncertainty = (f", set for {evidence['target_sensitivity']:.0%} sensitivity"
                   f"{rule_words(calibration)} on {evidence['n']} validation "
                   f"COVID-19 images: the true sensitivity could be as low as {evidence['sensitivity_ci'][0]:.0%}."
                   + grouped_evidence_note(evidence) if evidence else ".")
    threshold = st.slider("COVID-19 threshold", 0.0, 1.0, float(card.covid_threshold), 0.01,
                          key=f"threshold-{card.name}",
                          help="P(COVID19) at or above this is reported as COVID-19 positive. "
                               "The default is the model card's operating point" + uncertainty)

# No extension filter: DICOM files often have none (IM0001), so every file is recognised by its
# content and anything else gets a clear message from the decoder.
uploads = st.file_uploader("Upload chest X-rays (PNG, JPEG or DICOM)", accept_multiple_files=True, key="uploads")
views = describe_views(card.test_time_views)  # the probabilities average crops; saliency explains the box itself
st.caption(f"Model **{card.name}** ({card.arch}, {card.image_size} px"
           + (f"; {views}; saliency explains the box itself" if views else "") + "). Research demo, not for diagnosis.")
if not uploads:
    st.info("Drop one or more frontal chest X-rays above to classify them.")
    st.stop()

templates = load_model_templates(path)
# Every file is read and scored first: the table of all of them needs that, and it is quick. The full
# result (saliency, templates, report) is the slow part and a long page, so past DETAILED files it is
# drawn only for the files the user picks below the table.
DETAILED = 4
analyses, smalls, rows = {}, {}, []
for upload in uploads:
    try:
        analyses[upload.file_id] = remember(("analysis", path, upload.file_id), analyze, predictor,
                                            upload.getvalue(), upload.name)
    except CxrError as exc:
        analyses[upload.file_id] = exc
        rows.append({"file": upload.name, "error": str(exc)})
        continue
    analysis = analyses[upload.file_id]
    small = smalls[upload.file_id] = None if analysis.ood else small_image_note(card, max(analysis.img.shape))
    rows.append(result_row(upload.name, analysis, threshold, small))

if len(uploads) > 1:
    first = ["file", "label", "p_COVID19", "covid_positive", "ood", "small_image", "error"]
    fields = sorted({k for r in rows for k in r}, key=lambda k: (first.index(k) if k in first else len(first), k))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    with st.container(key="overview"):
        st.markdown(f"**{len(uploads)} files** at the threshold {threshold:.2f}.")
        # None, not "", where a file has no value: a column of one type each for Arrow.
        table = [{k: None if r.get(k, "") == "" else r[k] for k in fields} for r in rows]
        st.dataframe(table, hide_index=True, key="overview-table",
                     column_config={**{f"p_{c}": st.column_config.NumberColumn(f"P({c})", format="%.3f")
                                       for c in predictor.classes},
                                    "p_COVID19": st.column_config.NumberColumn("P(COVID-19)", format="%.3f"),
                                    "covid_positive": "COVID-19 call", "small_image": "small image",
                                    "longest_side_px": "longest side (px)", "ood": "not like an X-ray",
                                    "ood_score": st.column_config.NumberColumn("OOD score", format="%.2f")})
        st.download_button("Download all results (CSV)", buf.getvalue(), file_name="cxr-results.csv",
                           mime="text/csv")

# Numbered as in the table, which also tells two files of the same name apart.
numbered = {u.file_id: f"{i}. {u.name}" for i, u in enumerate(uploads, 1)}
shown = set(numbered.values())
if len(uploads) > DETAILED:
    readable = [numbered[u.file_id] for u in uploads if not isinstance(analyses[u.file_id], CxrError)]
    shown = set(st.multiselect(
        f"Full results (saliency, templates, report) for the files chosen here, up to {DETAILED * 2}; "
        f"the table above lists all {len(uploads)}", readable, default=readable[:DETAILED],
        max_selections=DETAILED * 2, key="detail-files"))

for upload in uploads:
    analysis = analyses[upload.file_id]
    if isinstance(analysis, CxrError):
        st.error(f"{upload.name} cannot be analysed: {analysis}")
        continue
    if numbered[upload.file_id] not in shown:
        continue
    with st.container(border=True, key=f"result-{upload.file_id}"):
        st.subheader(upload.name)
        covid = analysis.probability("COVID19")
        small = smalls[upload.file_id]
        left, right = st.columns([1, 1])
        with right:
            if analysis.ood:
                # No headline diagnosis for an image the model was never meant to read.
                st.warning(f"**This does not look like a frontal chest X-ray like those the model was trained on** "
                           f"(out-of-distribution score {analysis.ood_score:.2f}; above 1.00 is flagged). "
                           "No diagnosis is given; the model's raw output below is not meaningful for it.",
                           icon=":material/warning:")
            else:
                st.markdown(f"### Predicted: {analysis.label}")
            if not np.isnan(covid) and not analysis.ood:
                verdict = "above" if covid >= threshold else "below"
                st.markdown(f"P(COVID-19) = **{covid:.1%}**, {verdict} the threshold {threshold:.2f}.")
                if small:
                    st.warning(small, icon=":material/warning:")
            with st.expander("The model's output anyway") if analysis.ood else st.container():
                st.plotly_chart(probability_bars(analysis.classes, analysis.probs, threshold),
                                key=f"bars-{upload.file_id}")
            explained = st.selectbox("Explain class", analysis.classes, index=int(np.argmax(analysis.probs)),
                                     key=f"explain-{upload.file_id}")
        heatmap = remember(("heatmap", path, upload.file_id, explained, method), explain, load_explainer(path),
                           analysis, analysis.classes.index(explained), method)
        with left:
            lungs = card.resize_policy in LUNG_POLICIES
            cols = st.columns(3 if lungs else 2)
            if lungs:  # what was cut away never reached the model: borders, letters, markers
                cols[0].image(boxed_png(analysis), caption="Upload, lung box in yellow", width="stretch")
            a, b = cols[-2:]
            seen = {"lungs": "Model input (lung box)", "lung-square": "Model input (lung box)",
                    "lung-fields": "Model input (lung fields)"}
            a.image(analysis.prepared, caption=seen.get(card.resize_policy, "Model input"), width="stretch")
            b.image(overlay_png(analysis, heatmap, opacity), caption=f"{METHODS[method]}: {explained}",
                    width="stretch")
        if templates:
            with st.expander("Compare with the class templates (mean training images)", expanded=True):
                cols = st.columns(len(templates))
                for col, (name, (template, count)) in zip(cols, templates.items(), strict=True):
                    diff = np.abs(analysis.prepared.astype(np.int16) - template).astype(np.uint8)
                    col.image(template, caption=f"{name} template ({count} images)", width="stretch")
                    col.image(diff, caption=f"|upload - {name}| (mean {diff.mean():.0f})", width="stretch")
        # Rendered only when clicked (a callable): most reruns never need the report.
        report = functools.partial(render_report, analysis, heatmap, file_name=upload.name, model_name=card.name,
                                   method_label=METHODS[method], explained_class=explained,
                                   covid_threshold=threshold, opacity=opacity, notes=[small] if small else ())
        st.download_button("Download report (PNG)", report, file_name=f"{upload.name}.report.png",
                           mime="image/png", key=f"report-{upload.file_id}")

