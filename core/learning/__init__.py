"""The learning layer (TensorFlow): data pipelines, the model zoo, training, tuning, export, Grad-CAM.

Importing it offers the Keras runtime to ``core.serving.predictor``, which may not import the layer
above it; TensorFlow itself loads only when that runtime is first used.
"""
from __future__ import annotations

from pathlib import Path

from core.serving.predictor import offer_keras_runtime


def _keras_network(name: str, directory: Path | None):
    from core.learning import keras_model  # TensorFlow: only once the Keras runtime is asked for

    return keras_model.network(name, directory)


offer_keras_runtime(_keras_network)
