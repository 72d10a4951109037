"""Fitting the not-a-chest-X-ray check (``core.serving.quality``) on real training X-rays."""
from __future__ import annotations

from core.learning import data
from core.serving import registry
from core.serving.quality import DETECTOR_FILE, DETECTOR_SPEC, XrayDetector


def fit_detector(data_dir, seed: int = 42, progress=None) -> tuple[float, float, int]:
    """Fit on the training patients, threshold from the held-out ones, save beside the models.
    Returns (threshold, share of held-out X-rays rejected, held-out count)."""
    train, held_out = data.patient_split(data_dir, seed)
    train_set = data.load_set(train, DETECTOR_SPEC, progress=progress)
    held_out_set = data.load_set(held_out, DETECTOR_SPEC, progress=progress)
    detector = XrayDetector.fit(train_set.inputs, held_out_set.inputs)
    rejected = float((detector.residuals(held_out_set.inputs) > detector.threshold).mean())
    detector.save(registry.models_dir() / DETECTOR_FILE)
    return detector.threshold, rejected, len(held_out_set.labels)
