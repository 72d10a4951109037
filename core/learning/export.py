"""ONNX export of a trained Keras model: the serving artefact beside ``NAME.keras``.

For a network whose head is global average pooling (then dropout) then one dense
unit, the export gets a second output, the class activation map: the last
feature maps weighted by the head's weights (Zhou et al. 2016). For that head
Grad-CAM's weights are the head's weights divided by the map's area, so the
normalised maps are equal, and screening needs no gradients and no TensorFlow.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np

from core.serving import registry


def _producer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer whose output this layer reads (in a functional model)."""
    return layer.input._keras_history.operation


def _pooled_features(model: keras.Model):
    """The feature maps that the head's global average pooling reads, or None for other heads."""
    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        return None
    layer = _producer(head)
    while isinstance(layer, keras.layers.Dropout):
        layer = _producer(layer)
    if not isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return None
    return layer.input


def serving_graph(model: keras.Model) -> tuple[keras.Model, bool]:
    """(a model with the probability and, where the head allows, the class activation map; has_cam)."""
    features = _pooled_features(model)
    if features is None:
        return model, False
    head = model.layers[-1]
    channels = head.kernel.shape[0]
    weighting = keras.layers.Conv2D(1, 1, use_bias=False, dtype="float32", name="class_activation_map")
    cam = weighting(keras.ops.cast(features, "float32"))
    weighting.set_weights([np.asarray(head.kernel).reshape(1, 1, channels, 1)])
    return keras.Model(model.inputs, [model.output, cam], name=f"{model.name}_serving"), True


def export(model: keras.Model, card: dict, directory: Path | None = None) -> dict:
    """Write NAME.onnx and record its file, hash and heat-map output in the card."""
    directory = directory or registry.models_dir()
    path = directory / f"{card['name']}.onnx"
    graph, has_cam = serving_graph(model)
    size = card["preprocess"]["size"]
    graph(np.zeros((1, size, size, 1), np.float32))  # Keras exports only a model that has been called
    with warnings.catch_warnings():  # tf2onnx's NumPy deprecation notices, not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        graph.export(str(path), format="onnx", verbose=False)
    card = {**card, "onnx": {"file": path.name, "file_bytes": path.stat().st_size,
                             "sha256": registry.sha256_of(path), "heatmap": "cam" if has_cam else None}}
    registry.write_card(card, directory)
    return card
