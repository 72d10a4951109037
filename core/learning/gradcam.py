"""Grad-CAM at any layer of a Keras model, and its activation maps: TensorFlow, on request.

Screening and the dashboard's default views need none of this: the class activation map at
the last layer comes with the ONNX export, and occlusion and per-layer activation maps run in
ONNX Runtime (core.analysis.explain). Gradients at an inner layer need the Keras model.
Values are in [0, 1] at the model's input resolution.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from core.analysis.explain import ExplanationUnavailable
from core.learning import ensemble
from core.serving.heatmap import normalise, upsample

# Layers whose 4-D output is a spatial feature map worth explaining; pooling,
# dropout and padding only move the same features around.
_SKIPPED = (keras.layers.Dropout, keras.layers.ZeroPadding2D, keras.layers.InputLayer, keras.layers.Concatenate,
            keras.layers.Rescaling)


@dataclass(frozen=True)
class LayerRef:
    """A layer, possibly inside a nested model such as a keras.applications backbone."""

    name: str  # "layer" or "nested_model/layer"
    layer: keras.layers.Layer
    parent: keras.Model | None  # the nested model holding it, if any


def spatial_layers(model: keras.Model) -> list[LayerRef]:
    """Every layer with a (batch, height, width, channels) output, nested models included, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += [LayerRef(f"{layer.name}/{ref.name}", ref.layer, layer) for ref in spatial_layers(layer)]
        elif not isinstance(layer, _SKIPPED) and len(layer.output.shape) == 4:
            found.append(LayerRef(layer.name, layer, None))
    return found


def default_layer(model: keras.Model) -> LayerRef:
    """The last spatial layer, as Grad-CAM prescribes (coarse but most semantic)."""
    layers = [ref for ref in spatial_layers(model) if not isinstance(ref.layer, keras.layers.MaxPooling2D)]
    if not layers:
        raise ExplanationUnavailable(f"model '{model.name}' has no spatial (convolutional) layers: "
                                     "Grad-CAM and activation maps do not apply; use occlusion")
    return layers[-1]


def find_layer(model: keras.Model, name: str | None) -> LayerRef:
    if name is None:
        return default_layer(model)
    for ref in spatial_layers(model):
        if ref.name == name:
            return ref
    raise ExplanationUnavailable(f"no spatial layer '{name}' in model '{model.name}'")


def _head(model: keras.Model) -> keras.layers.Dense:
    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ExplanationUnavailable("the model does not end in a Dense sigmoid unit")
    return head


_GRADIENT_FUNCTIONS: dict[tuple[int, str], tuple] = {}
_CACHE_LOCK = threading.Lock()


def _features_and_gradients(model: keras.Model, ref: LayerRef):
    """x -> (feature maps at ref, d logit / d feature maps), traced once per model and layer:
    building and tracing cost far more than running."""
    key = (id(model), ref.name)
    with _CACHE_LOCK:
        if key not in _GRADIENT_FUNCTIONS:
            forward = _feature_model(model, ref)

            @tf.function
            def run(x):
                with tf.GradientTape() as tape:
                    features, head_input = forward(x)
                    tape.watch(features)
                    logit = _logit(model, head_input)
                return features, tape.gradient(logit, features)

            # The model is kept alongside so its id cannot be reused while cached.
            _GRADIENT_FUNCTIONS[key] = (model, run)
        return _GRADIENT_FUNCTIONS[key][1]


def _feature_model(model: keras.Model, ref: LayerRef):
    """A function x -> (feature map at ref, input of the final Dense unit).

    The keras-io recipe builds Model(inputs, [layer.output, model.output]); that
    fails for layers inside a nested model, whose tensors belong to the nested
    graph. Then the model is cut in three: before, inside and after the nested one.
    """
    head_input = _head(model).input
    if ref.parent is None:
        whole = keras.Model(model.inputs, [ref.layer.output, head_input])
        return lambda x: whole(x, training=False)
    node = ref.parent._inbound_nodes[0]
    before = keras.Model(model.inputs, node.input_tensors[0])
    inside = keras.Model(ref.parent.inputs, [ref.layer.output, ref.parent.output])
    after = keras.Model(node.output_tensors[0], head_input)

    def run(x):
        features, nested_output = inside(before(x, training=False), training=False)
        return features, after(nested_output, training=False)

    return run


def _logit(model: keras.Model, head_input):
    # The logit, not the probability: a saturated sigmoid has no gradient left.
    head = _head(model)
    return keras.ops.matmul(keras.ops.cast(head_input, "float32"), head.kernel)[:, 0] + head.bias[0]


def _member_and_layer(model: keras.Model, layer: str | None) -> tuple[keras.Model, str | None] | None:
    """For an ensemble and a layer named "member_i/layer": that member and its own layer name."""
    networks = ensemble.members(model)
    if not networks or layer is None:
        return None
    member, _, inner = layer.partition("/")
    return next(m for m in networks if m.name == member), inner or None


def gradcam(model: keras.Model, inputs: np.ndarray, layer: str | None = None) -> np.ndarray:
    """Grad-CAM heat maps (batch, H, W) at the input's resolution (Selvaraju et al. 2017);
    for an ensemble, the mean of its members' maps (or one member's, for a member's layer)."""
    chosen = _member_and_layer(model, layer)
    if chosen:
        return gradcam(chosen[0], inputs, chosen[1])
    networks = ensemble.members(model)
    if networks:
        maps = np.stack([gradcam(member, inputs) for member in networks], axis=1)  # (batch, members, H, W)
        return np.stack([normalise(per_image.mean(axis=0)) for per_image in maps])
    ref = find_layer(model, layer)
    features, grads = _features_and_gradients(model, ref)(tf.convert_to_tensor(inputs, tf.float32))
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)
    cams = tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1).numpy()
    return upsample(cams, inputs.shape[1:3])
