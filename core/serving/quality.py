"""Is this a chest X-ray, and is it good enough to screen?

Refusals raise :class:`NotChestXRayError` before any screening result exists;
milder problems come back as warnings shown beside the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.serving.imaging import DecodedImage, ImageError, PreprocessSpec, preprocess

# A gray X-ray saved as colour JPEG scores about 0-2; photos score 15 and more.
MAX_COLOURFULNESS = 8.0
# Chest radiographs are roughly square (portrait or landscape up to about 1:1.6).
MAX_ASPECT_RATIO = 2.0
MIN_CONTRAST_STD = 0.08  # intensity standard deviation on the [0, 1] scale
MAX_CLIPPED_FRACTION = 0.35
SMALL_SIDE = 200
# The chest-layout check: an image is compared with the main modes of variation
# of real chest X-rays (PCA at 32x32 after standardising intensity).
DETECTOR_FILE = "xray_detector.npz"
DETECTOR_SPEC = PreprocessSpec(32)
DETECTOR_COMPONENTS = 10
# Threshold: this quantile of held-out real X-rays' residuals, widened by a margin
# so that X-rays from other machines are not refused (checked by benchmarks/xray_check.py).
DETECTOR_QUANTILE = 99.5
DETECTOR_MARGIN = 1.08


class NotChestXRayError(ImageError):
    """Decodable, but not a chest X-ray: the image is rejected, not screened."""


def _standardised(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    return (flat - flat.mean(1, keepdims=True)) / np.maximum(flat.std(1, keepdims=True), 1e-3)


@dataclass(frozen=True)
class XrayDetector:
    """One-class check: how far an image lies from the subspace of real chest X-rays."""

    mean: np.ndarray
    components: np.ndarray  # (k, 32*32), orthonormal rows
    threshold: float

    def residuals(self, inputs: np.ndarray) -> np.ndarray:
        """Root-mean-square reconstruction error for (N, 32, 32, 1) detector inputs."""
        centred = _standardised(inputs) - self.mean
        reconstruction = (centred @ self.components.T) @ self.components
        return np.sqrt(((centred - reconstruction) ** 2).mean(axis=1))

    def residual(self, gray: np.ndarray) -> float:
        return float(self.residuals(preprocess(gray, DETECTOR_SPEC)[np.newaxis])[0])

    @classmethod
    def fit(cls, train_inputs: np.ndarray, held_out_inputs: np.ndarray) -> "XrayDetector":
        """PCA on training X-rays; the threshold from X-rays of other patients."""
        flat = _standardised(train_inputs)
        mean = flat.mean(axis=0)
        _, _, rows = np.linalg.svd(flat - mean, full_matrices=False)
        unthresholded = cls(mean, rows[:DETECTOR_COMPONENTS], np.inf)
        threshold = np.percentile(unthresholded.residuals(held_out_inputs), DETECTOR_QUANTILE) * DETECTOR_MARGIN
        return cls(mean, rows[:DETECTOR_COMPONENTS], float(threshold))

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, mean=self.mean, components=self.components, threshold=self.threshold)

    @classmethod
    def load(cls, path: Path) -> "XrayDetector":
        with np.load(path, allow_pickle=False) as stored:
            return cls(stored["mean"], stored["components"], float(stored["threshold"]))


# What a health worker can fix: an X-ray saved sideways, upside down, mirrored or with inverted grey levels.
_ORIENTATIONS = {
    "rotated a quarter turn clockwise": lambda g: np.rot90(g, 1),
    "rotated a quarter turn anticlockwise": lambda g: np.rot90(g, -1),
    "upside down": lambda g: np.rot90(g, 2),
    "inverted (bones dark, lungs light)": lambda g: 255 - g,
}


def orientation_hint(gray: np.ndarray, detector: XrayDetector) -> str:
    """A hint when the image becomes a chest radiograph once turned or inverted, else ''."""
    for problem, fix in _ORIENTATIONS.items():
        if detector.residual(np.ascontiguousarray(fix(gray))) <= detector.threshold:
            return f"; it looks {problem}: save it upright with bones light, then upload it again"
    return "; if it is a chest X-ray, check that it is upright, not mirrored and not inverted"


def check_chest_xray(decoded: DecodedImage, detector: XrayDetector | None = None) -> list[str]:
    """Raise NotChestXRayError for what is no chest X-ray; return quality warnings.

    Without a fitted detector only the colour and shape checks apply."""
    height, width = decoded.pixels.shape
    if decoded.colourfulness > MAX_COLOURFULNESS:
        raise NotChestXRayError("not a chest X-ray: the image is in colour")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise NotChestXRayError(f"not a chest X-ray: the image is too elongated ({width}x{height})")
    if detector is not None and detector.residual(decoded.pixels) > detector.threshold:
        raise NotChestXRayError("not a chest X-ray: the image does not have the layout of a chest radiograph"
                                + orientation_hint(decoded.pixels, detector))
    warnings = []
    pixels = decoded.pixels.astype(np.float32) / 255.0
    if pixels.std() < MIN_CONTRAST_STD:
        warnings.append("low contrast: the result may be unreliable")
    clipped = float(np.mean((decoded.pixels <= 2) | (decoded.pixels >= 253)))
    if clipped > MAX_CLIPPED_FRACTION:
        warnings.append(f"{clipped:.0%} of pixels are saturated: check exposure")
    if min(height, width) < SMALL_SIDE:
        warnings.append(f"low resolution ({width}x{height}): the result may be unreliable")
    return warnings
