"""Probability calibration applied at serving time (fitted in core.analysis.evaluation)."""
from __future__ import annotations

import numpy as np

EPSILON = 1e-7


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
    return np.log(p / (1 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def logit_mean(probabilities: np.ndarray) -> np.ndarray:
    """Per input (column), the sigmoid of the mean logit over its rows (views or members): a
    geometric mean of odds, so one confident row cannot outvote the rest."""
    return sigmoid(logit(probabilities).mean(axis=0))


def apply_calibration(raw: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Platt scaling on the logit: p = sigmoid(slope * logit(raw) + intercept)."""
    if not calibration:
        return np.asarray(raw, np.float64)
    return sigmoid(calibration["slope"] * logit(raw) + calibration["intercept"])
