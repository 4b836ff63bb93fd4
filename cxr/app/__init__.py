"""The Streamlit pages: the only package of cxr that imports streamlit."""
