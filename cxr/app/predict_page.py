"""Predict: upload chest X-rays, see the predicted class and its probabilities."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from cxr.app.resources import active_predictor
from cxr.decode import decode_image
from cxr.errors import CxrError

st.title("Chest X-ray classifier")
predictor = active_predictor()
uploads = st.file_uploader(
    "Upload chest X-rays (PNG, JPEG or DICOM)", accept_multiple_files=True,
    type=["png", "jpg", "jpeg", "dcm", "dicom"],
)
if predictor is not None:
    st.caption(f"Model: {predictor.card.name}")
    for upload in uploads or []:
        st.subheader(upload.name)
        try:
            img = decode_image(upload.getvalue(), name=upload.name)
        except CxrError as exc:
            st.error(f"{upload.name}: {exc}")
            continue
        probs = predictor.predict_proba([img])[0]
        label = predictor.classes[int(probs.argmax())]
        left, right = st.columns(2)
        left.image(img, caption=f"{img.shape[1]}x{img.shape[0]} px", clamp=True)
        right.markdown(f"**Predicted: {label}** ({probs.max():.0%})")
        figure = go.Figure(go.Bar(x=[float(p) for p in probs], y=predictor.classes, orientation="h"))
        figure.update_layout(xaxis={"range": [0, 1], "title": "probability"}, height=220,
                             margin={"l": 10, "r": 10, "t": 10, "b": 10})
        right.plotly_chart(figure, key=f"probs-{upload.file_id}")
