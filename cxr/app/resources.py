"""Cached, shared resources of the app (one model per process, reloaded when ACTIVE changes)."""

from __future__ import annotations

import streamlit as st

from cxr.config import get_paths
from cxr.errors import CxrError
from cxr.predict import Predictor
from cxr.store import ModelStore


def model_store() -> ModelStore:
    return ModelStore(get_paths().model_dir)


@st.cache_resource(max_entries=2, show_spinner="Loading the model...")
def _load_predictor(path: str) -> Predictor:
    return Predictor.from_path(path)


def active_predictor() -> Predictor | None:
    """The active model, or None after showing the user why there is none."""
    try:
        path = model_store().active_path()
        return _load_predictor(str(path))
    except CxrError as exc:
        st.error(f"No model is available: {exc}")
        return None
