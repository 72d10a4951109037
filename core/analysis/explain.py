"""Explanations without TensorFlow: the heat map a screening gives, occlusion, per-layer
activation maps from the ONNX export, and where on the X-ray a heat map's mass lies.

Every heat map answers one question: where does the model see evidence of pneumonia?
Values are in [0, 1] at the model's input resolution. Grad-CAM at an inner layer needs
gradients, and so the Keras model: core.learning.gradcam, loaded only on request.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.serving import registry
from core.serving.network import cpu_session
from core.serving.predictor import Predictor

METHODS = ("cam", "occlusion")
# Central thorax box as fractions of width and height; outside it lie the
# borders, corners and the top band where letters and markers sit.
THORAX_BOX = (0.12, 0.10, 0.88, 0.92)  # left, top, right, bottom
# The export's activations: what a layer passes on after its non-linearity (ReLU, ReLU6 as Clip).
ACTIVATION_OPS = ("Relu", "Clip")


class ExplanationUnavailable(ValueError):
    """The method cannot apply to this model (for example activation maps without spatial layers)."""


def method_for(predictor: Predictor) -> str:
    """The class activation map where the export has one (global-pooling heads, where it equals
    Grad-CAM at the last layer), occlusion otherwise (the dense baseline)."""
    return "cam" if predictor.network.has_cam else "occlusion"


def explain(predictor: Predictor, image: np.ndarray, method: str | None = None) -> np.ndarray:
    """One (H, W) heat map for one (H, W, 1) input: the class activation map (averaged over an
    ensemble's members) or occlusion sensitivity, both in ONNX Runtime."""
    method = method or method_for(predictor)
    if method == "cam":
        if not predictor.network.has_cam:
            raise ExplanationUnavailable(f"model '{predictor.name}' has no class activation map: use occlusion")
        return predictor.heatmap(image)
    if method == "occlusion":
        return predictor.occlusion(image)
    raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")


@dataclass(frozen=True)
class LayerOutput:
    """One spatial activation of the export: its tensor and its (height, width, channels)."""

    name: str  # the Keras layer's path in the export, without the serving graph's prefix
    tensor: str
    shape: tuple[int, int, int]
    channels_first: bool  # tf2onnx moves convolutions to NCHW


def _spatial_outputs(model) -> list[LayerOutput]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    found = []
    for node in inferred.graph.node:
        dims = shapes.get(node.output[0], [])
        if node.op_type not in ACTIVATION_OPS or len(dims) != 4:
            continue
        channels_first = dims[2] == dims[3] and dims[1] != dims[2]
        height, width, channels = (dims[2], dims[3], dims[1]) if channels_first else tuple(dims[1:])
        if min(height, width) > 1:
            # "serving/functional_1/stage0_out_1/Relu" -> "functional_1/stage0_out_1"
            name = "/".join(node.name.split("/")[1:-1]) or node.name
            found.append(LayerOutput(name, node.output[0], (height, width, channels), channels_first))
    return found


class LayerActivations:
    """The feature maps of every spatial layer of a model's ONNX export, computed by ONNX Runtime
    from the shipped file itself (hash-checked) with those layers added as outputs, so the
    activation maps are the served network's, not a copy's."""

    def __init__(self, predictor: Predictor):
        import onnx

        if not predictor.card.onnx:
            raise ExplanationUnavailable(f"model '{predictor.name}' has no ONNX export")
        path: Path = registry.verified_path(predictor.card.onnx["file"], predictor.card.onnx["sha256"],
                                            predictor.directory)
        model = onnx.load(str(path))
        self.layers = _spatial_outputs(model)
        if not self.layers:
            raise ExplanationUnavailable(f"model '{predictor.name}' has no spatial (convolutional) layers: "
                                         "activation maps do not apply; use occlusion")
        model.graph.output.extend(onnx.ValueInfoProto(name=layer.tensor) for layer in self.layers)
        self._session = cpu_session(model.SerializeToString())
        self._input = self._session.get_inputs()[0].name
        self._by_name = {layer.name: layer for layer in self.layers}

    def __call__(self, image: np.ndarray, name: str) -> np.ndarray:
        """The (H', W', C) feature maps of the named layer for one (H, W, 1) input."""
        layer = self._by_name[name]
        (maps,) = self._session.run([layer.tensor], {self._input: image[np.newaxis].astype(np.float32)})
        return np.moveaxis(maps[0], 0, -1) if layer.channels_first else maps[0]


def activation_grid(maps: np.ndarray, max_channels: int = 32, columns: int = 8, tile: int = 64) -> np.ndarray:
    """Feature maps side by side as one uint8 image, each channel scaled on its own."""
    count = min(max_channels, maps.shape[-1])
    rows = int(np.ceil(count / columns))
    grid = np.zeros((rows * (tile + 2), columns * (tile + 2)), np.uint8)
    for c in range(count):
        channel = maps[..., c]
        low, high = float(channel.min()), float(channel.max())
        scaled = ((channel - low) / (high - low) * 255 if high > low else np.zeros_like(channel)).astype(np.uint8)
        r, col = divmod(c, columns)
        grid[r * (tile + 2):r * (tile + 2) + tile, col * (tile + 2):col * (tile + 2) + tile] = cv2.resize(
            scaled, (tile, tile), interpolation=cv2.INTER_NEAREST)
    return grid


def thorax_mask(height: int, width: int) -> np.ndarray:
    left, top, right, bottom = THORAX_BOX
    mask = np.zeros((height, width), bool)
    mask[round(top * height):round(bottom * height), round(left * width):round(right * width)] = True
    return mask


def focus_shares(heat: np.ndarray) -> dict[str, float]:
    """Share of heat-map mass inside the central thorax box, outside it, and in the top band."""
    heat = np.asarray(heat, np.float64)
    total = heat.sum()
    if total <= 0:
        return {"inside": 0.0, "outside": 0.0, "top_band": 0.0}
    inside = heat[thorax_mask(*heat.shape)].sum() / total
    top_band = heat[: round(THORAX_BOX[1] * heat.shape[0])].sum() / total
    return {"inside": float(inside), "outside": float(1 - inside), "top_band": float(top_band)}
