"""ONNX export of a trained Keras model: the serving artefact beside ``NAME.keras``.

For a network whose head is global average pooling (then dropout) then one dense
unit, the export gets a second output, the class activation map: the last
feature maps (before any max pooling) weighted by the head's weights (Zhou et
al. 2016); an ensemble gets one map per member. For that head
Grad-CAM's weights are the head's weights divided by the map's area, so the
normalised maps are equal, and screening needs no gradients and no TensorFlow.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from core.learning import ensemble
from core.serving import registry
from core.serving.card import ModelCard


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
    features = layer.input
    # Max pooling before the global average routes each pooled cell's gradient to exactly one
    # input, so Grad-CAM's channel weights at the map before it are still the head's weights
    # (up to scale): the map before pooling is as faithful and finer (5x5 rather than 2x2).
    while isinstance(_producer(layer), keras.layers.MaxPooling2D):
        layer = _producer(layer)
        features = layer.input
    return features


def _class_activation_map(model: keras.Model):
    """A model from the input to (probability, class activation map), or None for other heads."""
    features = _pooled_features(model)
    if features is None:
        return None
    head = model.layers[-1]
    channels = head.kernel.shape[0]
    weighting = keras.layers.Conv2D(1, 1, use_bias=False, dtype="float32", name=f"{model.name}_cam")
    cam = weighting(keras.ops.cast(features, "float32"))
    weighting.set_weights([np.asarray(head.kernel).reshape(1, 1, channels, 1)])
    return keras.Model(model.inputs, [model.output, cam])


def serving_graph(model: keras.Model) -> tuple[keras.Model, bool]:
    """(a model with the probability and, where every head allows, one class activation map per
    member network, stacked on the last axis: (N, h, w, members); has the map)."""
    networks = ensemble.members(model) or [model]
    graphs = [_class_activation_map(network) for network in networks]
    if any(graph is None for graph in graphs):
        return model, False
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = [graph(inputs) for graph in graphs]
    if len(outputs) == 1:
        probability, maps = outputs[0]
    else:  # the ensemble's own combination, on the members' outputs: each member runs once
        probability = ensemble.mean_of_logits([p for p, _ in outputs], ensemble.member_calibrations(model))
        maps = keras.layers.Concatenate(name="member_maps")([cam for _, cam in outputs])
    return keras.Model(inputs, [probability, maps], name=f"{model.name}_serving"), True


def export(model: keras.Model, card: ModelCard, directory: Path | None = None) -> ModelCard:
    """Write NAME.onnx and record its file, hash and heat-map output in the card."""
    directory = directory or registry.models_dir()
    path = directory / f"{card.name}.onnx"
    graph, has_cam = serving_graph(model)
    size = card.spec.size
    graph(np.zeros((1, size, size, 1), np.float32))  # Keras exports only a model that has been called
    with warnings.catch_warnings():  # tf2onnx's NumPy deprecation notices, not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        graph.export(str(path), format="onnx", verbose=False)
    card = replace(card, onnx={"file": path.name, "file_bytes": path.stat().st_size,
                               "sha256": registry.sha256_of(path), "heatmap": "cam" if has_cam else None})
    registry.write_card(card, directory)
    return card
