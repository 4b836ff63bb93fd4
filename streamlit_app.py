"""Router: page config, disclaimer, navigation. The pages live in cxr/app/."""

import streamlit as st

st.set_page_config(page_title="cxr - chest X-ray classifier", page_icon="🫁", layout="wide")
st.sidebar.warning("Research demo, not a medical device: not for diagnosis.")
st.navigation([st.Page("cxr/app/predict_page.py", title="Predict", default=True)]).run()
