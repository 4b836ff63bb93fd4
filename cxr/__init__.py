"""cxr: chest X-ray classification (COVID-19 / normal / pneumonia) with saliency.

The library is UI-free: `cxr.app` is the only package that imports Streamlit.
"""

__version__ = "0.1.0"
