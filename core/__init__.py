"""Pneumonia screening library: the public API.

``Predictor`` turns image bytes into a ``ScreeningResult``; ``registry`` lists the
models and their cards; a ``SiteProfile`` holds a clinic's own operating points.
The package is split where TensorFlow starts:

- ``core.serving``: decoding, input checks, preprocessing, ONNX forward pass,
  calibration, heat maps, registry and site profiles; never imports TensorFlow.
- ``core.analysis``: the data set listing, evaluation, reports, the shift check, bench,
  explanations in ONNX Runtime, site calibration; no TensorFlow either.
- ``core.learning``: the model zoo, training, tuning, export, Grad-CAM, download (TensorFlow).

Each layer imports only those listed above it (tests/test_layers.py).
"""
import os

# Before the imports below, any of which may load TensorFlow: no oneDNN and absl chatter in every command.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.serving import registry
from core.serving.imaging import ImageError, PreprocessSpec
from core.serving.predictor import Predictor, ScreeningResult
from core.serving.quality import NotChestXRayError
from core.serving.site import SiteProfile, SiteProfileError

__all__ = ["ImageError", "NotChestXRayError", "Predictor", "PreprocessSpec", "ScreeningResult", "SiteProfile",
           "SiteProfileError", "registry"]
