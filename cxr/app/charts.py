"""Plotly figures shared by the pages (no Streamlit here: they are plain figure builders)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

_MARGIN = {"l": 10, "r": 10, "t": 30, "b": 10}


def probability_bars(classes: list[str], probs: np.ndarray, covid_threshold: float | None = None) -> go.Figure:
    colors = ["#c0392b" if c == "COVID19" else "#2e86c1" if c == "NORMAL" else "#d68910" for c in classes]
    fig = go.Figure(go.Bar(x=[float(p) for p in probs], y=classes, orientation="h", marker_color=colors,
                           text=[f"{float(p):.1%}" for p in probs], textposition="auto"))
    if covid_threshold is not None and "COVID19" in classes:
        fig.add_vline(x=covid_threshold, line_dash="dash", line_color="#c0392b",
                      annotation_text="COVID-19 threshold", annotation_position="top")
    fig.update_layout(xaxis={"range": [0, 1], "title": "probability"}, height=230, margin=_MARGIN)
    return fig


def training_curves(history: dict[str, list[float]]) -> go.Figure:
    fig = go.Figure()
    for key in ("loss", "val_loss", "val_figure_loss", "accuracy", "val_accuracy", "val_figure_accuracy"):
        if history.get(key):
            fig.add_trace(go.Scatter(y=history[key], x=list(range(1, len(history[key]) + 1)), name=key,
                                     mode="lines+markers", line={"dash": "dot" if key.startswith("val") else "solid"}))
    fig.update_layout(xaxis_title="epoch", height=300, margin=_MARGIN)
    return fig


def confusion_heatmap(labels: list[str], matrix: list[list[int]]) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Blues", text=matrix,
                               texttemplate="%{text}", showscale=False))
    fig.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                      height=320, margin=_MARGIN)
    return fig


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> go.Figure:
    fig = go.Figure()
    for name, (fpr, tpr, auc) in curves.items():
        fig.add_trace(go.Scatter(x=fpr, y=tpr, name=f"{name} (AUROC {auc:.3f})", mode="lines"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], name="chance", mode="lines", line={"dash": "dash", "color": "#999"}))
    fig.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate", height=350,
                      margin=_MARGIN)
    return fig


def reliability_diagram(confidence: np.ndarray, accuracy: np.ndarray, counts: np.ndarray) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Bar(x=confidence, y=accuracy, name="accuracy in bin", width=0.05,
                         hovertext=[f"{int(n)} images" for n in counts]))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], name="perfect calibration", mode="lines",
                             line={"dash": "dash", "color": "#999"}))
    fig.update_layout(xaxis_title="confidence", yaxis_title="accuracy", height=320, margin=_MARGIN,
                      xaxis_range=[0, 1], yaxis_range=[0, 1])
    return fig
