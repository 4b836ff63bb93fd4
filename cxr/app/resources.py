"""Cached, shared resources of the app.

The model, its explainer and its templates are held once per process in st.cache_resource,
keyed by the model's folder: activating another model changes the key, so the next run loads
the new one and the old entry ages out (max_entries).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from cxr.config import get_paths
from cxr.errors import CxrError
from cxr.predict import Predictor
from cxr.saliency import Explainer
from cxr.store import ModelStore
from cxr.templates import TEMPLATES_DIR, load_templates


def model_store() -> ModelStore:
    return ModelStore(get_paths().model_dir)


@st.cache_resource(max_entries=3, show_spinner="Loading the model...")
def load_predictor(path: str) -> Predictor:
    return Predictor.from_path(path)


@st.cache_resource(max_entries=3, show_spinner="Preparing saliency maps...")
def load_explainer(path: str) -> Explainer:
    predictor = load_predictor(path)
    return Explainer(predictor.model, predictor.card.arch, predictor.card.binary)


@st.cache_resource(max_entries=3)
def load_model_templates(path: str) -> dict:
    """The templates saved with the model, else the shipped ones if they match its input size."""
    templates = load_templates(Path(path) / TEMPLATES_DIR)
    if not templates:
        templates = load_templates(get_paths().assets_dir / "templates")
    size = load_predictor(path).card.image_size
    return {c: t for c, t in templates.items() if t[0].shape == (size, size)}


def active_model_path() -> str | None:
    """Folder of the active model, or None after telling the user why there is none."""
    try:
        return str(model_store().active_path())
    except CxrError as exc:
        st.error(f"No model is available: {exc}")
        return None


def clear_model_caches() -> None:
    """Forget loaded models (after activating or deleting one)."""
    load_predictor.clear()
    load_explainer.clear()
    load_model_templates.clear()


@st.cache_resource
def job_runner():
    """One training-job runner per server process, shared by every session."""
    from cxr.jobs import JobRunner

    return JobRunner()
