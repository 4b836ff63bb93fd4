"""Templates: the mean training image of each class for the active model."""

from __future__ import annotations

import streamlit as st

from cxr.app.resources import active_model_path, load_model_templates, load_predictor

st.title("Class templates")
path = active_model_path()
if path is None:
    st.stop()
templates = load_model_templates(path)
card = load_predictor(path).card
st.caption(f"Mean of the training images of each class, at the input of model {card.name} "
           f"({card.image_size} px, {card.resize_policy}). Differences between templates are what a model "
           "*could* learn, including how each source frames its images.")
if not templates:
    st.warning("This model has no templates. Create them with `python -m cxr templates --data DIR`.")
    st.stop()
cols = st.columns(len(templates))
for col, (name, (img, count)) in zip(cols, templates.items(), strict=True):
    col.image(img, caption=f"{name}: mean of {count} images", width="stretch")
