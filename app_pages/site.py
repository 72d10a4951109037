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
           "Bring back your own screening results with each child's diagnosis filled in (or a few hundred "
           "labelled X-rays), and get your clinic's own operating points as a site profile for the Screen page "
           "and the command line.")

RESULTS = "Screening results with diagnoses"
source = st.radio("Labelled X-rays", [RESULTS, "Upload a zip", "A folder on this machine"], horizontal=True,
                  help="Screening results: the CSV from the Screen page (or `core screen`), with the diagnosis "
                       "column filled in for each child whose diagnosis is known. No image is needed.")
target = st.slider("Sensitivity target of the screening point", 0.90, 0.99, 0.98, 0.01)


def labelled_results() -> tuple[list[dict], str]:
    """(results rows, their file's name) from an upload; no rows when none is given or it cannot be read."""
    upload = st.file_uploader("Screening results (CSV or JSON) with the diagnosis column filled in",
                              type=["csv", "json"])
    if not upload:
        return [], ""
    try:
        return site_calibration.parse_results(upload.getvalue(), upload.name), upload.name
    except ValueError as exc:
        st.error(str(exc))
        return [], ""


def labelled_images() -> site_calibration.LabelledImages:
    """Labelled X-ray files from a zip upload or a folder on this machine."""
    if source == "Upload a zip":
        upload = st.file_uploader("A zip with NORMAL/ and PNEUMONIA/ folders", type=["zip"])
        if upload:
            try:
                return site_calibration.read_zip(upload.getvalue())
            except ValueError as exc:
                st.error(f"{upload.name}: {exc}.")
    else:
        folder = st.text_input("Folder with NORMAL/ and PNEUMONIA/ subfolders")
        if folder:
            try:
                return site_calibration.read_folder(folder)
            except (FileNotFoundError, OSError) as exc:
                st.error(str(exc))
    return site_calibration.LabelledImages([])


if source == RESULTS:
    st.markdown("On the Screen page, download the results of each batch (**Table and CSV download**). Keep the "
                "file; add each child's diagnosis (NORMAL or PNEUMONIA) in the **diagnosis** column when it is "
                "known, and the child's patient number in **patient** if a child has more than one X-ray; then "
                "bring it back here. The X-rays themselves are not needed.")
    rows, results_name = labelled_results()
    model = predictor(site_calibration.results_model(rows) or default_model())
    local = site_calibration.from_results(model, rows) if rows else None
    if local is not None:
        st.caption(f"{results_name}: {len(rows)} rows, {len(local.labels)} usable: " + ", ".join(
            f"{int((local.labels == i).sum())} {c}" for i, c in enumerate(CLASS_NAMES))
            + f" (model {model.name}; the bootstrap resamples by {local.resampled_by}).")
    ready = local is not None and len(local.labels) > 0
else:
    model = predictor(default_model())
    images = labelled_images()
    local = None
    ready = bool(images.files)
    if ready:
        st.caption(f"{len(images.files)} images found: " + ", ".join(
            f"{sum(1 for f in images.files if f[2] == i)} {c}" for i, c in enumerate(CLASS_NAMES)))
if not ready:
    if local is not None:
        for file, reason in local.refused:
            st.warning(f"Not used: **{file}**: {reason}")
    st.info("Choose labelled local X-rays or screening results to calibrate on. Nothing is stored: only "
            "thresholds, counts and a digest of the set go into the profile.")
    st.stop()

name = st.text_input("Site name", "clinic")
if not st.button("Calibrate", type="primary"):
    st.stop()

if local is None:
    bar = st.progress(0.0, text="Scoring the local X-rays…")
    local = site_calibration.score(model, images, lambda done, total: bar.progress(
        done / total, text=f"Scoring {done}/{total}"))
    bar.empty()
if local.refused:
    with st.expander(f"{len(local.refused)} not used, and why", expanded=len(local.refused) <= 10):
        for file, reason in local.refused:
            st.markdown(f"- **{file}**: {reason}")
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
                   "application/json", type="primary", on_click="ignore")
st.caption(f"Use it on the Screen page (Settings → Operating points → upload), put it in models/sites/ for "
           f"everyone, or `python -m core screen --site {name}.json`. Calibration: "
           f"{content['calibration']['source']}; images used: {int(np.size(local.labels))}, resampled by "
           f"{content['resampled_by']}.")
