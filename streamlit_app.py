"""Router: page config, disclaimer, navigation. The pages live in cxr/app/."""

import streamlit as st

st.set_page_config(page_title="cxr - chest X-ray classifier", page_icon=":material/pulmonology:", layout="wide")
st.sidebar.warning("Research demo, not a medical device: not for diagnosis.")
pages = [
    st.Page("cxr/app/predict_page.py", title="Predict", icon=":material/radiology:", default=True),
    st.Page("cxr/app/templates_page.py", title="Templates", icon=":material/photo_library:"),
    st.Page("cxr/app/evaluation_page.py", title="Evaluation", icon=":material/analytics:"),
    st.Page("cxr/app/retrain_page.py", title="Retrain", icon=":material/model_training:"),
    st.Page("cxr/app/about_page.py", title="About / model card", icon=":material/info:"),
]
st.navigation(pages).run()
