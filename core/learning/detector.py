"""Fitting the not-a-chest-X-ray check (``core.serving.quality``) on real training X-rays."""
from __future__ import annotations

import numpy as np

from core.analysis import data
from core.serving import registry
from core.serving.quality import DETECTOR_FILE, XrayDetector, layout_input, profile_features

# Lung-field views for the second layout subspace: crops keeping this share of
# each side, centred near the lung field with some jitter. The shift check's
# fixed crops (60-70%, core.analysis.shift) lie inside this range; they are
# what the check is measured on, these are what it is fitted on.
VIEW_SIDES = (0.6, 0.85)
VIEW_CENTRE_ROWS = (0.40, 0.50)
VIEW_CENTRE_COLUMNS = (0.45, 0.55)


def lung_field_view(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop around the lung field, as a clinic framing tighter than the training hospital."""
    height, width = gray.shape
    side = rng.uniform(*VIEW_SIDES)
    crop_h, crop_w = round(height * side), round(width * side)
    top = int(np.clip(height * rng.uniform(*VIEW_CENTRE_ROWS) - crop_h / 2, 0, height - crop_h))
    left = int(np.clip(width * rng.uniform(*VIEW_CENTRE_COLUMNS) - crop_w / 2, 0, width - crop_w))
    return gray[top:top + crop_h, left:left + crop_w]


def _measures(grays: list[np.ndarray], rng: np.random.Generator):
    """Layout inputs as framed and as lung-field views, and the profiles of both."""
    views = [lung_field_view(g, rng) for g in grays]
    framings = [np.stack([layout_input(g) for g in grays]), np.stack([layout_input(v) for v in views])]
    return framings, np.stack([profile_features(g) for g in grays + views])


def fit_detector(data_dir, seed: int = 42, progress=None) -> tuple[XrayDetector, dict[str, float]]:
    """Fit on the training patients, thresholds from the held-out ones, save beside the models.
    Returns the detector and the share of held-out X-rays it refuses, as framed and as lung-field views."""
    train, held_out = data.patient_split(data_dir, seed)
    rng = np.random.default_rng(seed)
    framings, profiles = _measures(data.decode_grays(train, progress)[1], rng)
    held_framings, held_profiles = _measures(data.decode_grays(held_out, progress)[1], rng)
    detector = XrayDetector.fit(framings, held_framings, profiles, held_profiles)
    detector.save(registry.models_dir() / DETECTOR_FILE)
    count = len(held_framings[0])
    refused = ((detector.residuals(np.concatenate(held_framings)) > detector.layout_threshold)
               | (detector.distances(held_profiles) > detector.profile_threshold))
    return detector, {"as framed": float(refused[:count].mean()), "lung-field views": float(refused[count:].mean()),
                      "images": count}
