"""Evaluation: the active model on held-out data, plus a look at the data itself (EDA)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from cxr.app.charts import confusion_heatmap, reliability_diagram, roc_curves
from cxr.app.resources import active_model_path, load_predictor
from cxr.config import get_paths
from cxr.data import load_imageset
from cxr.datasets import list_datasets
from cxr.eda import aspect_separability, image_statistics
from cxr.errors import CxrError
from cxr.metrics import reliability_bins, roc_points


@st.cache_data(show_spinner="Evaluating the model on the test split...", max_entries=4)
def evaluate(model_path: str, data: str) -> tuple[dict, dict, tuple]:
    predictor = load_predictor(model_path)
    _, probs, labels, metrics = predictor.evaluate(data, "test")
    return metrics, roc_points(probs, labels, predictor.classes), reliability_bins(probs, labels, 10)


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
tab_metrics, tab_eda = st.tabs(["Model metrics", "Data (EDA)"])

with tab_metrics:
    st.caption("Internal test (same sources as training). It cannot show whether the model learned the disease "
               "or the hospital an image came from; see the About page.")
    try:
        metrics, curves, bins = evaluate(path, str(data))
    except CxrError as exc:
        st.error(str(exc))
        st.stop()
    c = st.columns(4)
    c[0].metric("Accuracy", f"{metrics['accuracy']:.3f}")
    c[1].metric("Balanced accuracy", f"{metrics['balanced_accuracy']:.3f}")
    c[2].metric("Macro AUROC", f"{metrics['macro_auroc']:.3f}" if metrics["macro_auroc"] else "n/a")
    c[3].metric("ECE", f"{metrics['ece']:.3f}")
    if metrics["binary"]:
        b = metrics["binary"]
        st.markdown(f"COVID-19 vs normal (n={b['n']}): AUROC **{b['auroc']:.3f}**, sensitivity "
                    f"{b['sensitivity']:.3f}, specificity {b['specificity']:.3f} at threshold {b['threshold']:.2f}")
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
