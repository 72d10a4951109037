"""Keras model files: saving after training, hash-checked loading, and the Keras forward pass.

The ``.keras`` file is the source of truth for training and the analyst views;
screening runs its ONNX export (``core.learning.export``, ``core.serving.network``).
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core.learning import ensemble, zoo  # noqa: F401  register the custom layers that model files refer to
from core.serving import registry
from core.serving.card import ModelCard


def load(name: str, directory: Path | None = None) -> tuple[keras.Model, ModelCard]:
    """The model and its card, after checking the file against the card's hash (safe_mode=True)."""
    card = registry.load_card(name, directory)
    path = registry.verified_path(card.file, card.sha256, directory)
    return keras.saving.load_model(path, compile=False, safe_mode=True), card


def save(model: keras.Model, card: ModelCard, directory: Path | None = None) -> ModelCard:
    """Write NAME.keras (weights only, no optimizer state) and its card; list it in the manifest."""
    directory = directory or registry.models_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{card.name}.keras"
    # A fresh, uncompiled copy drops the optimizer state, two thirds of the file
    # (clone_model would keep the optimizer; from_config does not).
    inference = keras.Model.from_config(model.get_config())
    inference.set_weights(model.get_weights())
    inference.save(path)
    card = replace(card, file=path.name, file_bytes=path.stat().st_size, sha256=registry.sha256_of(path))
    registry.write_card(card, directory)
    registry.update_manifest(directory)
    return card


def network(name: str, directory: Path | None = None) -> KerasNetwork:
    """The hash-checked Keras file as a Predictor's network: the Keras runtime core.learning offers."""
    return KerasNetwork(load(name, directory)[0])


class KerasNetwork:
    """The same interface as ``core.serving.network.OnnxNetwork``, on the Keras model; thread-safe."""

    has_cam = False  # heat maps on this path: occlusion (Predictor), or Grad-CAM on request (core.learning.gradcam)

    def __init__(self, model: keras.Model):
        self.model = model
        signature = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        # One traced graph for every batch size: no retracing, no per-call
        # overhead of Model.predict, and no state shared between threads.
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[signature])
        self._lock = threading.Lock()

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        with self._lock:
            return self._forward(tf.convert_to_tensor(batch, tf.float32)).numpy().reshape(-1), None
