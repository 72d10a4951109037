"""Pneumonia screening dashboard: the entry point (``streamlit run streamlit_app.py``)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st

from core.serving.memory import memory_budget_mb, return_freed_memory
from ui.common import default_model, predictor, warm_analyst_pages

st.set_page_config(page_title="Chest X-ray pneumonia screening", page_icon=":material/pulmonology:", layout="wide")

# Under a memory budget (a public demo), before the model loads; setting it again at each run is harmless.
if memory_budget_mb() is not None:
    return_freed_memory()

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
try:
    navigation.run()
finally:  # also when a page stops early (st.stop)
    # After the first page has run, so that the first screening does not wait for it, the analyst
    # pages' modules are imported in the background, so that their first visit does not wait either.
    warm_analyst_pages()
