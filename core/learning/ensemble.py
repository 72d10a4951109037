"""Ensembles: several trained networks averaged in logit space, saved as one Keras model.

Members trained from different initialisations make different mistakes on
images unlike their training data; averaging their logits (a geometric mean
of odds) keeps what they agree on. The heat map of an ensemble is the average
of its members' maps, each scaled to [0, 1] first so no member dominates.
"""
from __future__ import annotations

import keras
from keras import layers

MEAN_LAYER = "ensemble_mean"
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="core")
class ProbabilityToLogit(layers.Layer):
    """The logit of a sigmoid output, clipped away from 0 and 1, then the member's own Platt
    calibration (slope * logit + intercept; 1 and 0 leave it as it is)."""

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.slope, self.intercept = float(slope), float(intercept)

    def call(self, probabilities):
        p = keras.ops.clip(keras.ops.cast(probabilities, "float32"), EPSILON, 1.0 - EPSILON)
        logit = keras.ops.log(p) - keras.ops.log(1.0 - p)  # no Log1p: ONNX export lacks it
        return self.slope * logit + self.intercept

    def get_config(self) -> dict:
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept}


def combine(models: list[keras.Model], name: str, calibrations: list[dict] | None = None) -> keras.Model:
    """One model whose output is the sigmoid of the members' mean (calibrated) logit."""
    inputs = keras.Input(shape=models[0].input_shape[1:], name="image")
    # Renamed copies (same layers and weights): members need unique names inside the ensemble.
    members = [keras.Model(m.inputs, m.outputs, name=f"member_{i}") for i, m in enumerate(models)]
    return keras.Model(inputs, mean_of_logits([member(inputs) for member in members], calibrations), name=name)


def mean_of_logits(probabilities: list, calibrations: list[dict] | None = None) -> keras.KerasTensor:
    """The sigmoid of the mean logit of the members' probabilities, each calibrated first."""
    calibrations = calibrations or [{"slope": 1.0, "intercept": 0.0}] * len(probabilities)
    logits = [ProbabilityToLogit(c["slope"], c["intercept"], name=f"logit_{i}")(p)
              for i, (p, c) in enumerate(zip(probabilities, calibrations))]
    mean = layers.Average(name=MEAN_LAYER)(logits)
    return layers.Activation("sigmoid", dtype="float32", name="probability")(mean)


def member_calibrations(model: keras.Model) -> list[dict]:
    """Each member's calibration inside an ensemble, in member order (for its serving graph)."""
    found = sorted((layer for layer in model.layers if isinstance(layer, ProbabilityToLogit)),
                   key=lambda layer: int(layer.name.rsplit("_", 1)[1]))
    return [{"slope": layer.slope, "intercept": layer.intercept} for layer in found]


def members(model: keras.Model) -> list[keras.Model]:
    """The member networks of an ensemble; empty for any other model."""
    if not any(layer.name == MEAN_LAYER for layer in model.layers):
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]
