"""About: intended use, data provenance and its bias, the active model's card."""

from __future__ import annotations

import json

import streamlit as st

from cxr import __version__
from cxr.app.resources import active_model_path, load_predictor
from cxr.calibration import describe_threshold
from cxr.probe import may_learn

st.title("About this model")
st.error("**Research demo, not a medical device.** Not for diagnosis, triage or any clinical decision.")
st.markdown(
    """
**Intended use.** Exploring how a small convolutional network classifies frontal chest X-rays as
COVID-19, normal or pneumonia, and what it looks at (saliency maps). Not validated on any patient
population.

**Training data.** 1,391 X-rays assembled by the DarkCovidNet study: COVID-19 images are figures from
journal articles and case pages (ieee8023 collection: cropped, re-encoded, some with letters and
arrows); pneumonia and most normal images come from one US archive (NIH ChestX-ray14, square
1024 px originals); 269 further normals come from a teaching set (OpenIST). Split by patient.

**Known bias: the model may learn the hospital, not the disease.** Every COVID-19 image comes from
other hospitals and publication pipelines than every pneumonia image. A model can separate them by
image size, crop, aspect ratio, JPEG history or burned-in text. The current recipe crops every
X-ray to the box around its lung fields (found by a small segmentation network trained on the
OpenIST lung masks), so the framing of the source and most of its borders and letters never reach
the classifier; it standardises intensities per image, and adds those figure cues (downscaling,
JPEG, crops, letters, arrows, borders) to training images of *every* class. The Evaluation page's
shortcut probe checks that normal X-rays made to look like figures do not turn into COVID-19.
Internal test metrics still come from the same sources as training and cannot prove it learned
lung findings. Published COVID-19 X-ray models lose most of their accuracy on other hospitals' images.

**Probabilities and threshold.** Probabilities are temperature-scaled on the validation split; the
COVID-19 threshold is the highest one that still found 95% of the validation COVID-19 images.

**Not an X-ray?** Images unlike the training X-rays (photos, documents, noise, other body parts) are
flagged as out of distribution and get a warning instead of a diagnosis. Cropped, annotated,
or re-compressed chest X-rays are still chest X-rays: the gate learnt them too, and lets them through.

**Labels.** NIH labels are text-mined from reports and are noisy, particularly "pneumonia".
"""
)
path = active_model_path()
if path is not None:
    card = load_predictor(path).card
    st.subheader(f"Active model: {card.name}")
    val = card.metrics.get("validation", {})
    cols = st.columns(4)
    members = card.training.get("ensemble_of", [])  # an average of models (cxr.ensemble)
    cols[0].metric("Architecture", f"{len(members)} x {card.arch}" if members else card.arch,
                   help=f"The average of {len(members)} {card.arch} models (listed below)." if members else None)
    cols[1].metric("Input", f"{card.image_size} px")
    cols[2].metric("Validation accuracy", f"{val['accuracy']:.3f}" if val else "n/a")
    cols[3].metric("COVID-19 threshold", f"{card.covid_threshold:.2f}")
    threshold = describe_threshold(card.covid_threshold, card.metrics.get("calibration") or {})
    if threshold:
        st.markdown(f"**Threshold evidence.** {threshold}")
    st.markdown(f"Trained {card.created[:10]} with `{card.training.get('command', '?')}`; "
                f"data fingerprint `{card.training.get('data', {}).get('fingerprint', '?')[:16]}...`")
    if members:
        st.markdown("The average of: " + "; ".join(f"**{m['name']}** (`{m['command'] or '?'}`)" for m in members))
    st.markdown(f"**What this model may be learning.** {may_learn(card)}")
    with st.expander("Full model card (JSON)"):
        st.code(json.dumps(json.loads(card.to_json()), indent=2), language="json")
st.caption(f"cxr {__version__}")
