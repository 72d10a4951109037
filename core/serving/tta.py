"""Test-time zooms: one probability from several framings of the same image, in NumPy.

Clinics frame the chest more tightly or loosely than the training hospital did;
averaging over a few zooms makes the answer depend less on any one framing.
The views are made here, outside any network, so that the Keras path (training,
analysis) and the ONNX path (screening) average over exactly the same pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from core.serving.calibration import logit_mean


def zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """One (H, W, 1) input seen at another framing, same size out: factor > 1 crops
    the centre (tighter), factor < 1 extends the borders by reflection (looser)."""
    if factor == 1.0:
        return image
    size = image.shape[0]
    plane = image[..., 0]
    if factor > 1.0:
        margin = round(size * (1.0 - 1.0 / factor) / 2)
        framed = cv2.resize(plane[margin:size - margin, margin:size - margin], (size, size),
                            interpolation=cv2.INTER_LINEAR)
    else:
        margin = round(size * (1.0 / factor - 1.0) / 2)
        padded = cv2.copyMakeBorder(plane, margin, margin, margin, margin, cv2.BORDER_REFLECT_101)
        framed = cv2.resize(padded, (size, size), interpolation=cv2.INTER_AREA)
    return framed[..., np.newaxis].astype(np.float32)


def views(inputs: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """Every input at every zoom, zoom-major: (len(zooms) * N, H, W, 1). All views go
    through the network in one batch, which uses a CPU's cores better than one call each."""
    return np.concatenate([np.stack([zoom(image, factor) for image in inputs]) for factor in zooms])


def average(probabilities: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """The views' probabilities averaged per input in logit space."""
    per_zoom = np.asarray(probabilities, np.float64).reshape(len(zooms), -1)
    return logit_mean(per_zoom) if len(zooms) > 1 else per_zoom[0]
