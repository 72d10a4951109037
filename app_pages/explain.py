"""Explain: class activation maps, occlusion, per-layer activation maps; Grad-CAM at an inner layer on request."""
from pathlib import Path

import streamlit as st

from core.analysis import data, explain
from core.serving.heatmap import overlay
from core.serving.imaging import ImageError, load_model_input
from core.serving.memory import TENSORFLOW_MB, tensorflow_refusal
from core.serving.quality import check_chest_xray
from ui.common import format_probability, gray_image, layer_activations, model_picker, predictor

METHOD_LABELS = {"cam": "Class activation map (last layer)", "occlusion": "Occlusion sensitivity",
                 "gradcam": "Grad-CAM at a chosen layer"}
TENSORFLOW_NOTE = ("Grad-CAM at an inner layer needs gradients, so the Keras model and TensorFlow: about "
                   f"{TENSORFLOW_MB:.0f} MB more server memory and several seconds to load, for every user of this "
                   "server until it restarts. The class activation map is Grad-CAM at the last layer, without it.")
# Where the server's memory budget refuses TensorFlow (a public demo): what the visitor can do instead.
GRADCAM_INSTEAD = ("Without TensorFlow, choose {methods} under Method above. For Grad-CAM at an inner layer, run "
                   "your own copy of this dashboard (see the README).")

st.title("Explain a prediction")
st.caption("Heat maps show where the model finds evidence of pneumonia. A model that looks at borders, "
           "letters or markers instead of the lungs has learnt a shortcut.")

with st.sidebar:
    model_name = model_picker()
    opacity = st.slider("Heat-map opacity", 0.0, 1.0, 0.45, 0.05)
model = predictor(model_name)

source = st.radio("Image", ["Upload", "From a data folder"], horizontal=True)
image_bytes, image_name = None, None
if source == "Upload":
    upload = st.file_uploader("A chest X-ray", type=["jpg", "jpeg", "png", "dcm", "dicom"])
    if upload:
        image_bytes, image_name = upload.getvalue(), upload.name
else:
    folder = st.text_input("Data folder (Kaggle layout)", str(data.default_data_dir() or ""))
    splits = data.available_splits(folder) if folder else []
    if splits:
        split = st.selectbox("Split", splits)
        files = data.sample_files(folder, split, per_class=20)
        choices = [path for paths in files.values() for path in paths]
        path = st.selectbox("File", choices, format_func=lambda p: f"{Path(p).parent.name}/{Path(p).name}")
        image_bytes, image_name = Path(path).read_bytes(), Path(path).name
    elif folder:
        st.warning(f"No NORMAL/PNEUMONIA split folders under {folder}.")
if image_bytes is None:
    st.info("Choose an image to explain.")
    st.stop()

try:
    # The same input checks as the Screen page: what Screen refuses is not explained here either.
    loaded = load_model_input(image_bytes, model.spec)
    warnings = check_chest_xray(loaded.decoded, model.detector)
except ImageError as exc:
    st.error(f"{image_name}: {exc}")
    st.stop()
gray, inputs = loaded.decoded.pixels, loaded.tensor
for warning in warnings:
    st.warning(f"Image quality: {warning}")
probability = float(model.probabilities(inputs[None])[0])
zooms = model.test_time_zooms
st.metric("Probability of pneumonia", format_probability(probability),
          help=f"model {model.name}" + (f", averaged over {len(zooms)} framings; the maps explain the image as "
                                        "uploaded" if len(zooms) > 1 else ""))

methods = [m for m in METHOD_LABELS if m != "cam" or model.network.has_cam]
method = st.radio("Method", methods, horizontal=True, format_func=METHOD_LABELS.get,
                  help="An ensemble's class activation map is the mean of its members' maps, as on the Screen page")
if method == "gradcam":
    st.info(TENSORFLOW_NOTE)
    if not st.toggle("Load TensorFlow for Grad-CAM", key="load_tensorflow"):
        st.stop()
    # Asked at each request, not once: the server's memory grows with its visitors.
    refusal = tensorflow_refusal()
    if refusal:
        without = " or ".join(f'"{METHOD_LABELS[m]}"' for m in methods if m != "gradcam")
        st.warning(f"{refusal} {GRADCAM_INSTEAD.format(methods=without)}")
        st.stop()
    with st.spinner("Loading TensorFlow and the Keras model…"):
        from core.learning import gradcam

        keras_model = model.model
        keras_layers = [ref.name for ref in gradcam.spatial_layers(keras_model)]
    if not keras_layers:
        st.warning("This model has no convolutional layers: Grad-CAM does not apply, occlusion sensitivity does.")
        st.stop()
    layer = st.selectbox("Layer", keras_layers, index=keras_layers.index(gradcam.default_layer(keras_model).name),
                         help="The default is the last convolutional layer, the one Grad-CAM prescribes; one "
                              "member's layer of an ensemble explains that member alone")
    with st.spinner("Computing Grad-CAM…"):
        heat = gradcam.gradcam(keras_model, inputs[None], layer)[0]
else:
    with st.spinner("Computing the heat map…"):
        heat = explain.explain(model, inputs, method)
# Placed where the model's input lies in the X-ray (a framed model sees only its standard frame).
heat = loaded.in_image(heat)
shares = explain.focus_shares(heat)
image_column, heat_column = st.columns(2)
image_column.image(gray_image(gray), caption=image_name, width="stretch")
heat_column.image(overlay(gray, heat, opacity, loaded.frame), width="stretch",
                  caption=f"{METHOD_LABELS[method]}: {shares['inside']:.0%} of the heat inside the central thorax "
                          "region")

st.subheader("Activation maps")
try:
    activations = layer_activations(model_name)
except explain.ExplanationUnavailable as exc:
    st.info(str(exc))
    st.stop()
names = [layer.name for layer in activations.layers]
by_name = {layer.name: layer for layer in activations.layers}
shown = st.selectbox("Layer", names, index=len(names) - 1, key="activation_layer",
                     format_func=lambda n: f"{names.index(n) + 1}. {n} ({by_name[n].shape[0]}x{by_name[n].shape[1]}, "
                                           f"{by_name[n].shape[2]} channels)",
                     help="What each layer of the served network passes on, computed by ONNX Runtime")
maps = activations(inputs, shown)
channels = maps.shape[-1]
count = st.slider("Channels", 1, channels, min(16, channels)) if channels > 1 else 1
st.image(explain.activation_grid(maps, max_channels=count), width="stretch",
         caption=f"{shown}: {maps.shape[0]}x{maps.shape[1]} feature maps, first {min(count, channels)} "
                 f"of {channels} channels")
