"""DICOM decoding with pydicom: display-ready intensities, patient tags kept apart."""
from __future__ import annotations

import io
import logging
import warnings

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from core.serving.errors import ImageError
from core.serving.imaging import DECODE_SIDE, MAX_REDUCTION, RADIOGRAPH_MODALITIES
from core.serving.settings import MAX_PIXELS

# pydicom's validation warnings quote tag values, which can be a patient's name:
# nothing of a file may reach a log, so they are silenced.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.CRITICAL)

# Tags that can identify a patient or a visit. They are returned separately and
# are never shown or exported unless a user opens them on purpose.
PATIENT_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "OtherPatientIDs", "InstitutionName", "ReferringPhysicianName",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyInstanceUID",
)


def decode_dicom(data: bytes) -> tuple[np.ndarray, int, dict]:
    """Pixels as displayed (modality LUT, VOI window, MONOCHROME1 inverted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _decode(data)
        except ImageError:
            raise
        except Exception as exc:  # pydicom parses lazily and raises many types on damaged files
            raise ImageError("the DICOM file is corrupt") from exc


def _decode(data: bytes) -> tuple[np.ndarray, int, dict]:
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImageError("the DICOM file is corrupt") from exc
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise ImageError(f"a DICOM of modality {modality} is not a chest radiograph (CR or DX expected)")
    if "PixelData" not in dataset:
        raise ImageError("the DICOM file holds no image (it may be truncated or corrupt)")
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageError("the DICOM file is corrupt (image size missing)") from exc
    if frames > 1:
        raise ImageError(f"multi-frame DICOM ({frames} frames) is not supported: export a single image")
    if rows * columns > MAX_PIXELS:
        raise ImageError(f"the image is too large ({columns}x{rows} pixels)")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"DICOM colour images ({photometric}) are not supported")
    try:
        pixels = dataset.pixel_array
        pixels = apply_modality_lut(pixels, dataset)
        pixels = apply_voi_lut(pixels, dataset)
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(dataset.file_meta, "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ImageError(f"the DICOM compression ({name}) cannot be decoded here") from exc
    except Exception as exc:  # pydicom raises many types on damaged pixel data
        raise ImageError("the DICOM pixel data is corrupt") from exc
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 2:
        raise ImageError("the DICOM image has an unexpected shape")
    if photometric == "MONOCHROME1":
        # MONOCHROME1 stores bone dark: invert so every image shows bone bright.
        pixels = pixels.max() + pixels.min() - pixels
    bits = int(dataset.get("BitsStored", 16) or 16)
    tags = {name: str(dataset.get(name)) for name in PATIENT_TAGS if dataset.get(name) not in (None, "")}
    return reduced(pixels), bits, tags


def reduced(pixels: np.ndarray) -> np.ndarray:
    """Pixels averaged down by the largest factor of 2, 4 or 8 that leaves DECODE_SIDE a side."""
    factor = 1
    while factor < MAX_REDUCTION and min(pixels.shape) // (2 * factor) >= DECODE_SIDE:
        factor *= 2
    if factor == 1:
        return pixels
    height, width = pixels.shape
    # Float32 holds every 16-bit stored value exactly; INTER_AREA averages each factor x factor block.
    return cv2.resize(pixels.astype(np.float32), (width // factor, height // factor),
                      interpolation=cv2.INTER_AREA).astype(np.float64)
