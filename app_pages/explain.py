"""Explain: Grad-CAM or occlusion heat maps and per-layer activation maps."""
from pathlib import Path

import streamlit as st

from core.analysis import explain
from core.learning import data, ensemble
from core.serving.heatmap import overlay
from core.serving.imaging import ImageError, load_model_input
from core.serving.quality import check_chest_xray
from ui.common import format_probability, gray_image, model_picker, predictor

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

refs = {ref.name: ref for ref in explain.spatial_layers(model.model)}
layers = list(refs)


def layer_label(name: str | None) -> str:
    """Keras names such as re_lu_1 say little: add the layer's kind and its feature-map shape."""
    if name is None:
        return "All members, each at its last convolutional layer (the ensemble's own map)"
    layer = refs[name].layer
    _, height, width, channels = layer.output.shape
    return f"{layers.index(name) + 1}. {name} ({type(layer).__name__}, {height}x{width}, {channels} channels)"



methods = ["gradcam", "occlusion"] if layers else ["occlusion"]
left, right = st.columns(2)
method = left.radio("Method", methods, horizontal=True,
                    format_func={"gradcam": "Grad-CAM", "occlusion": "Occlusion sensitivity"}.get)
layer = None
if layers:
    default = explain.default_layer(model.model).name
    # An ensemble's heat map is the mean of its members' maps, as on the Screen page;
    # one member's layer explains that member alone.
    choices = [None, *layers] if ensemble.members(model.model) else layers
    layer = right.selectbox("Layer for Grad-CAM and the activation maps" if method == "gradcam"
                            else "Layer for the activation maps (occlusion hides image regions, not layers)",
                            choices, index=choices.index(None if None in choices else default),
                            format_func=layer_label,
                            help="The default is the last convolutional layer, the one Grad-CAM prescribes")
else:
    right.info("This model has no convolutional layers: Grad-CAM and activation maps do not apply, "
               "occlusion sensitivity does.")

with st.spinner("Computing the heat map…"):
    # Placed where the model's input lies in the X-ray (a framed model sees only its standard frame).
    heat = loaded.in_image(explain.explain(model.model, inputs, method, layer if method == "gradcam" else None))
shares = explain.focus_shares(heat)
image_column, heat_column = st.columns(2)
image_column.image(gray_image(gray), caption=image_name, width="stretch")
heat_column.image(overlay(gray, heat, opacity, loaded.frame), width="stretch",
                  caption=f"{method}: {shares['inside']:.0%} of the heat inside the central thorax region")

if layers:
    st.subheader("Activation maps")
    shown = layer or default  # activation maps are one layer's, for an ensemble one member's
    maps = explain.activations(model.model, inputs, shown)
    channels = maps.shape[-1]
    count = st.slider("Channels", 1, channels, min(16, channels)) if channels > 1 else 1
    st.image(explain.activation_grid(maps, max_channels=count), width="stretch",
             caption=f"{shown}: {maps.shape[0]}x{maps.shape[1]} feature maps, first {min(count, maps.shape[-1])} "
                     f"of {maps.shape[-1]} channels")
