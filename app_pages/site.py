"""Site calibration: a clinic's own operating points from its own labelled X-rays."""
import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.analysis import evaluation, site_calibration
from core.serving.settings import CLASS_NAMES
from ui.common import confusion_figure, default_model, line_figure, predictor

st.title("Site calibration")
st.caption("Thresholds set at the training hospital do not carry over to another X-ray machine and population. "
           "Upload a few hundred of your own X-rays whose diagnosis you know, and get your clinic's own "
           "operating points as a site profile for the Screen page and the command line.")

model = predictor(default_model())
source = st.radio("Labelled X-rays", ["Upload a zip", "A folder on this machine"], horizontal=True)
target = st.slider("Sensitivity target of the screening point", 0.90, 0.99, 0.98, 0.01)


images = site_calibration.LabelledImages([])
if source == "Upload a zip":
    upload = st.file_uploader("A zip with NORMAL/ and PNEUMONIA/ folders", type=["zip"])
    if upload:
        try:
            images = site_calibration.read_zip(upload.getvalue())
        except ValueError as exc:
            st.error(f"{upload.name}: {exc}.")
else:
    folder = st.text_input("Folder with NORMAL/ and PNEUMONIA/ subfolders")
    if folder:
        try:
            images = site_calibration.read_folder(folder)
        except (FileNotFoundError, OSError) as exc:
            st.error(str(exc))
files = images.files
if not files:
    st.info("Choose labelled local X-rays to calibrate on. Nothing is stored: only thresholds, counts and a digest "
            "of the set go into the profile.")
    st.stop()

name = st.text_input("Site name", "clinic")
if not st.button("Calibrate", type="primary"):
    st.caption(f"{len(files)} images found: " + ", ".join(
        f"{sum(1 for f in files if f[2] == i)} {c}" for i, c in enumerate(CLASS_NAMES)))
    st.stop()

bar = st.progress(0.0, text="Scoring the local X-rays…")
local = site_calibration.score(model, images, lambda done, total: bar.progress(done / total,
                                                                                text=f"Scoring {done}/{total}"))
bar.empty()
for file, reason in local.refused:
    st.warning(f"Refused: **{file}**: {reason}")
try:
    content, advice = site_calibration.calibrate(model, local, target, name)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
for line in advice:
    st.warning(line)

site_probabilities = site_calibration.site_probabilities(local, content)
figure = line_figure("ROC on the local X-rays", "False positive rate (1 - specificity)", "Sensitivity",
                     diagonal=True)
roc = evaluation.curves(local.labels, site_probabilities)["roc"]
figure.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"{model.name}, AUC "
                            f"{evaluation.auc(local.labels, site_probabilities):.3f}"))
for source_name, symbol in (("shipped", "circle-open"), ("site", "star")):
    for point_name, point in content["metrics"][source_name].items():
        figure.add_trace(go.Scatter(x=[1 - point["specificity"]], y=[point["sensitivity"]], mode="markers",
                                    marker={"symbol": symbol, "size": 14}, name=f"{source_name} {point_name}"))
st.plotly_chart(figure, width="stretch")

st.subheader("Operating points")
rows = []
for source_name in ("shipped", "site"):
    for point_name, point in content["metrics"][source_name].items():
        rows.append({"points": source_name, "point": point_name, "threshold": round(point["threshold"], 4),
                     "sensitivity": point["sensitivity"],
                     "sensitivity 95% CI": "–".join(f"{v:.3f}" for v in point["sensitivity_95ci"] or []),
                     "specificity": point["specificity"],
                     "specificity 95% CI": "–".join(f"{v:.3f}" for v in point["specificity_95ci"] or [])})
st.dataframe(rows, hide_index=True, width="stretch")
st.caption("Measured on the images the site's points were fitted on: new patients will do somewhat worse.")
columns = st.columns(4)
for column, (source_name, point_name) in zip(columns, [(s, p) for s in ("shipped", "site")
                                                      for p in ("screening", "balanced")]):
    point = content["metrics"][source_name][point_name]
    column.plotly_chart(confusion_figure(point["confusion"], f"{source_name} {point_name}"), width="stretch")

sample = content["sample_size"]
(st.success if sample["sufficient"] else st.warning)(
    f"{sample['pneumonia_images']} pneumonia images; {sample['needed']} are needed to show a sensitivity of "
    f"{target:.2f} with 95% confidence.")
st.download_button("Download the site profile (JSON)", json.dumps(content, indent=1), f"{name}.json",
                   "application/json", type="primary")
st.caption(f"Use it on the Screen page (Settings → Operating points → upload), put it in models/sites/ for "
           f"everyone, or `python -m core screen --site {name}.json`. Calibration: "
           f"{content['calibration']['source']}; images scored: {int(np.size(local.labels))}.")
