"""Pneumonia screening dashboard: the entry point (``streamlit run streamlit_app.py``)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Chest X-ray pneumonia screening", page_icon="🫁", layout="wide")

navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/screen.py", title="Screen", icon="🩻"),
    st.Page("pages/explorer.py", title="Dataset explorer", icon="📊"),
    st.Page("pages/compare.py", title="Model comparison", icon="⚖️"),
    st.Page("pages/explain.py", title="Explain", icon="🔍"),
])
navigation.run()
