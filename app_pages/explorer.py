"""Dataset explorer: class balance, pixel histograms, sizes, duplicates and samples."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.analysis import data
from core.learning.download import DEFAULT_BASE_URL, DownloadError, download
from core.serving.memory import tensorflow_refusal
from ui.common import shipped_profile

st.title("Dataset explorer")

SOURCES = ("Profile shipped with the models", "A data folder on this machine", "Download the public data set")
source = st.radio("Data", SOURCES, horizontal=True)


class StreamlitProgress:
    """Adapts st.progress to the update(n) calls core makes while reading images."""

    def __init__(self, total: int, text: str):
        self.total, self.done, self.text = max(total, 1), 0, text
        self.bar = st.progress(0.0, text=text)

    def update(self, n: int) -> None:
        self.done += n
        if self.done % 50 == 0 or self.done == self.total:
            self.bar.progress(min(self.done / self.total, 1.0), text=f"{self.text} {self.done}/{self.total}")


@st.cache_data(show_spinner=False)
def folder_profile(folder: str) -> dict:
    total = sum(len(data.list_examples(folder, s)) for s in data.available_splits(folder))
    return data.profile_folder(folder, progress=StreamlitProgress(total, "Reading images"))


profile, folder = None, None
if source == SOURCES[0]:
    profile = shipped_profile()
    st.caption("Computed by `python -m core train` on the data the shipped models saw (patient-level split).")
elif source == SOURCES[1]:
    default = data.default_data_dir()
    # Empty until the user types: profiling a large default folder first would make them wait.
    folder = st.text_input("Folder in Kaggle layout (SPLIT/NORMAL, SPLIT/PNEUMONIA)",
                           placeholder=str(default or "path/to/chest_xray"))
    if folder and data.available_splits(folder):
        profile = folder_profile(folder)
    elif folder:
        st.error(f"No NORMAL/PNEUMONIA split folders found under {folder}.")
else:
    destination = st.text_input("Download into", "data")
    base_url = st.text_input("Source", DEFAULT_BASE_URL)
    if st.button("Download"):
        # Checked before fetching: unpacking the TFRecords loads TensorFlow.
        refusal = tensorflow_refusal()
        if refusal:
            st.warning(f"{refusal} The profile shipped with the models needs no TensorFlow. To download the "
                       "public data set, run `python -m core download --dest data` on your own copy of this "
                       "dashboard.")
            st.stop()
        bar = st.progress(0.0, text="Starting…")

        def show(done: int, total: int, label: str) -> None:
            bar.progress(min(done / total, 1.0) if total > 0 else 0.0, text=f"{label}: {done / 1e6:.0f} MB")

        try:
            summary = download(destination, base_url, progress=show)
            st.success("Downloaded: " + "; ".join(f"{s}: {c}" for s, c in summary.counts.items()))
        except DownloadError as exc:
            st.error(f"Download failed: {exc}")
        finally:
            bar.empty()  # no stale progress bar above the outcome

if not profile:
    st.stop()

splits = profile["splits"]
st.subheader("Class balance")
balance = go.Figure([go.Bar(name=name, x=list(splits), y=[splits[s]["counts"][name] for s in splits])
                     for name in data.CLASS_NAMES])
balance.update_layout(barmode="group", yaxis_title="images", height=320, margin={"t": 20})
st.plotly_chart(balance, width="stretch")
st.caption(" · ".join(f"{s}: {sum(v['counts'].values())} images from {v['patients']} patients"
                      for s, v in splits.items()))

st.subheader("Pixel intensities by class")
split = st.selectbox("Split", list(splits))
bins = splits[split]["histogram_bins"]
centres = (np.arange(bins) + 0.5) * 256 / bins
histogram = go.Figure([go.Scatter(x=centres, y=values, mode="lines", fill="tozeroy", name=name, opacity=0.6)
                       for name, values in splits[split]["pixel_histograms"].items()])
histogram.update_layout(xaxis_title="intensity (0-255)", yaxis_title="share of pixels", height=320,
                        margin={"t": 20})
st.plotly_chart(histogram, width="stretch")

st.subheader("Image sizes")
sizes = splits[split]["image_size"]
common = sizes["most_common"] if sizes else []
if len(common) == 1:  # one size for every image: a chart would be a single dot
    st.write(f"Every image is {common[0]['width']} x {common[0]['height']} pixels ({common[0]['count']} images).")
elif common:
    scatter = go.Figure(go.Scatter(x=[c["width"] for c in common], y=[c["height"] for c in common], mode="markers",
                                   marker={"size": [8 + 30 * c["count"] / common[0]["count"] for c in common]},
                                   text=[f"{c['count']} images" for c in common]))
    scatter.update_layout(xaxis_title="width (px)", yaxis_title="height (px)", height=320, margin={"t": 20})
    st.plotly_chart(scatter, width="stretch")

st.subheader("Exact duplicates")
duplicates = profile["duplicates"]
st.write(f"{len(duplicates)} groups of byte-identical files.")
if duplicates:
    st.dataframe([{"files": " = ".join(group)} for group in duplicates], hide_index=True, width="stretch")

if folder:
    st.subheader("Samples")
    for name, paths in data.sample_files(folder, split).items():
        st.markdown(f"**{name}**")
        st.image([str(p) for p in paths], width=120, caption=[p.name for p in paths])
