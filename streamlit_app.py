"""Pneumonia screening dashboard: the entry point (``streamlit run streamlit_app.py``)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st

from ui.common import default_model, predictor

st.set_page_config(page_title="Chest X-ray pneumonia screening", page_icon=":material/pulmonology:", layout="wide")

# Warm start: the default model (ONNX Runtime, no TensorFlow) is loaded by the first request
# of the server, whatever page it asks for, and then shared by every session.
predictor(default_model())

navigation = st.navigation([
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/screen.py", title="Screen", icon=":material/radiology:"),
    st.Page("app_pages/explorer.py", title="Dataset explorer", icon=":material/bar_chart:"),
    st.Page("app_pages/compare.py", title="Model comparison", icon=":material/compare:"),
    st.Page("app_pages/explain.py", title="Explain", icon=":material/search_insights:"),
    st.Page("app_pages/site.py", title="Site calibration", icon=":material/tune:"),
])
navigation.run()
