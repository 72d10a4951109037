"""The baseline of benchmarks.launch: a bare Streamlit app with one uploader and no model, so
that what the dashboard adds to a clinic's first result is told apart from Streamlit's own cost."""
import streamlit as st

upload = st.file_uploader("A chest X-ray")
if upload:
    st.metric("Probability of pneumonia", f"{len(upload.getvalue())} bytes read")
