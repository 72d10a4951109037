"""Constants shared by every part of the project: one source for each."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # label index = position; the model outputs P(PNEUMONIA)
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm", ".dicom"}
# screening: the threshold that keeps sensitivity at the target (a missed pneumonia
# costs more than a review); balanced: the best sum of sensitivity and specificity.
OPERATING_POINTS = ("screening", "balanced")
# A health worker screens; every caller (page, CLI, API) defaults to the same point.
DEFAULT_OPERATING_POINT = "screening"
# A clinic upload is a few MB; anything far larger is refused before decoding.
MAX_FILE_BYTES = 50 * 1024 * 1024
# Checked from the header, before the pixels are decoded: a 30,000 x 30,000
# "decompression bomb" would need gigabytes of memory.
MAX_PIXELS = 40_000_000
# Written into site profiles and reports; raised when what they mean changes.
TOOL_VERSION = "0.3.0"
# Raised whenever decoding or preprocessing changes what a model is given for the same bytes: an
# archive job resumed across such a change would mix two readings of its files (core.serving.archive).
PIPELINE_VERSION = "2026-12-06: digital first, DICOM reduced"
