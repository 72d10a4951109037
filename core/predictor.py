"""The Predictor: a loaded model with its card, turning image bytes into a result."""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core import registry, tta
from core.evaluation import apply_calibration
from core.imaging import PreprocessSpec, decode_image, preprocess
from core.quality import XrayDetector, check_chest_xray

LABELS = ("NORMAL", "PNEUMONIA")


@dataclass
class ScreeningResult:
    """One screened image. A screening aid: a clinician makes the diagnosis."""

    probability: float  # calibrated probability of pneumonia
    label: str  # at the operating point below
    operating_point: str
    threshold: float
    model: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Predictor:
    """Thread-safe: one model, shared by every session of the dashboard."""

    def __init__(self, model: keras.Model, card: dict, detector: XrayDetector | None = None):
        self.model = model
        self.detector = detector
        self.card = card
        self.name: str = card["name"]
        self.spec = PreprocessSpec.from_dict(card["preprocess"])
        self.calibration: dict | None = card.get("calibration")
        self.operating_points: dict[str, float] = card["operating_points"]
        self.test_time_zooms: list[float] = card.get("test_time_zooms", [1.0])
        signature = tf.TensorSpec([None, self.spec.size, self.spec.size, 1], tf.float32)
        # One traced graph for every batch size: no retracing, no per-call
        # overhead of Model.predict, and no state shared between threads.
        self._forward = tf.function(tta.averaged(model, self.test_time_zooms), input_signature=[signature])
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str | None = None, directory: Path | None = None) -> "Predictor":
        model, card = registry.load_model(name or registry.default_model_name(directory), directory)
        return cls(model, card, registry.load_detector(directory))

    def raw_probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """The model's sigmoid outputs (averaged over its test-time zooms) for a preprocessed batch."""
        with self._lock:
            return self._forward(tf.convert_to_tensor(inputs, tf.float32)).numpy().reshape(-1)

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Calibrated pneumonia probabilities for a batch of preprocessed inputs."""
        return apply_calibration(self.raw_probabilities(inputs), self.calibration)

    def label_for(self, probability: float, operating_point: str = "balanced") -> str:
        return LABELS[int(probability >= self.operating_points[operating_point])]

    def screen(self, data: bytes, operating_point: str = "balanced") -> ScreeningResult:
        """Screen one image given as bytes; raises ImageError for input that cannot be screened."""
        if operating_point not in self.operating_points:
            raise ValueError(f"unknown operating point '{operating_point}'; "
                             f"choose from {', '.join(self.operating_points)}")
        started = time.perf_counter()
        decoded = decode_image(data)
        decoded_at = time.perf_counter()
        warnings = check_chest_xray(decoded, self.detector)
        inputs = preprocess(decoded.pixels, self.spec)[np.newaxis]
        prepared_at = time.perf_counter()
        probability = float(self.probabilities(inputs)[0])
        finished = time.perf_counter()
        return ScreeningResult(
            probability=probability,
            label=self.label_for(probability, operating_point),
            operating_point=operating_point,
            threshold=float(self.operating_points[operating_point]),
            model=self.name,
            timings_ms={"decode": 1e3 * (decoded_at - started), "preprocess": 1e3 * (prepared_at - decoded_at),
                        "inference": 1e3 * (finished - prepared_at), "total": 1e3 * (finished - started)},
            warnings=warnings,
        )
