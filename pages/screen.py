"""Screen: upload X-rays, get a probability, a label and a heat map for each."""
import streamlit as st

from core import explain, screening
from core.imaging import ImageError, decode_image
from pages.common import DISCLAIMER, OPERATING_POINT_HELP, model_picker, predictor

st.title("Screen chest X-rays")
st.caption(DISCLAIMER)

with st.sidebar:
    model_name = model_picker()
    operating_point = st.radio("Operating point", ["screening", "balanced"], help=OPERATING_POINT_HELP)
    opacity = st.slider("Heat-map opacity", 0.0, 1.0, 0.4, 0.05)

uploads = st.file_uploader("Chest X-rays (JPEG, PNG or DICOM)", type=["jpg", "jpeg", "png", "dcm", "dicom"],
                           accept_multiple_files=True,
                           help="Processed in memory only: nothing you upload is stored or logged.")
if not uploads:
    st.info("Upload one or more chest X-rays to screen them.")
    st.stop()

model = predictor(model_name)
with st.spinner("Screening…"):
    rows = [screening.screen_bytes(model, upload.name, upload.getvalue(), operating_point) for upload in uploads]

st.subheader("Results")
st.dataframe([row.to_dict() for row in rows], hide_index=True, width="stretch")
st.download_button("Download results (CSV)", screening.rows_to_csv(rows), "screening_results.csv", "text/csv")


def show_patient_tags(data: bytes, key: str) -> None:
    """DICOM patient details only on an explicit request, never in any export."""
    if st.toggle("Show patient details from the DICOM file", key=key):
        try:
            st.json(decode_image(data).private_tags)
        except ImageError as exc:
            st.error(str(exc))


for index, (upload, row) in enumerate(zip(uploads, rows)):
    st.divider()
    if row.status != "ok":
        (st.warning if row.status == "rejected" else st.error)(f"**{row.file}**: {row.message}")
        continue
    left, right = st.columns([3, 2])
    data = upload.getvalue()
    with right:
        st.markdown(f"**{row.file}**")
        st.metric("Probability of pneumonia", f"{row.probability:.1%}")
        if row.label == "PNEUMONIA":
            st.error(f"Possible pneumonia at the {operating_point} operating point: refer for clinical review.")
        else:
            st.success(f"No pneumonia flagged at the {operating_point} operating point.")
        st.caption(f"{operating_point} threshold {row.result.threshold:.3f}, model {row.model}, "
                   f"{row.result.timings_ms['total']:.0f} ms")
        for warning in row.result.warnings:
            st.warning(f"Image quality: {warning}")
        if data[128:132] == b"DICM":
            show_patient_tags(data, key=f"tags-{index}")
    with left:
        try:
            gray, heat = explain.explain_bytes(model.model, model.spec, data)
            st.image(explain.overlay(gray, heat, opacity), caption="Heat map: where the model sees pneumonia",
                     width="stretch")
        except explain.ExplanationUnavailable as exc:
            st.info(str(exc))
