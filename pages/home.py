"""Home: what the tool is for, and the model in use."""
import streamlit as st

from ui.common import DISCLAIMER, card_summary, cards, default_model

st.title("Chest X-ray pneumonia screening")
st.markdown(DISCLAIMER)
st.markdown(
    "For health workers in clinics: upload paediatric chest X-rays (JPEG, PNG or DICOM) on the **Screen** page "
    "and get, for each, the probability of pneumonia, a label at a chosen operating point and a heat map of "
    "where the model looked. Images are processed in memory and never stored.\n\n"
    "For analysts: the **Dataset explorer** shows the training data, **Model comparison** sets the models "
    "side by side, and **Explain** opens Grad-CAM and activation maps layer by layer.")

name = default_model()
card = next(c for c in cards() if c["name"] == name)
st.subheader(f"Model in use: {name}")
summary = card_summary(card)
columns = st.columns(4)
for column, key in zip(columns, ("AUC", "accuracy", "sensitivity", "specificity")):
    column.metric(f"validation {key}", f"{summary[key]:.3f}")
st.caption(f"{card['description']}. Trained on {sum(card['training']['counts']['train'].values())} images, "
           f"validated on {card['validation']['n']} images of other patients; operating points: "
           + ", ".join(f"{k} {v:.3f}" for k, v in card["operating_points"].items()) + ".")
with st.expander("Full model card"):
    st.json(card)
