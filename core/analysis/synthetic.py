"""Drawn chest-like radiographs for benchmarks, tests and demos: never a real patient's image."""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def chest_xray(seed: int, pneumonia: bool, size: int = 96) -> np.ndarray:
    """Torso, two dark lung fields crossed by ribs, spine and abdomen as (size, size) uint8;
    pneumonia adds an opacity in the right lung. Shaped so that it passes the not-a-chest-X-ray
    check: a radiograph's layout, and its texture at every size (the ribs and the soft-tissue
    mottle are drawn relative to the image, not per pixel)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    half_width = 0.30 + 0.16 * np.clip(y / 0.3, 0, 1)  # shoulders widen the torso below the neck
    body = 1 / (1 + np.exp(-(half_width - np.abs(x - 0.5)) * 30))
    lungs = sum(np.exp(-(((x - cx) / 0.12) ** 2 + ((y - 0.47) / 0.24) ** 4)) for cx in (0.31, 0.69))
    spine = np.exp(-((x - 0.5) / 0.08) ** 2)
    abdomen = 1 / (1 + np.exp(-(y - 0.8) * 25))
    ribs = np.sin(2 * np.pi * (9 * y + 0.6 * (x - 0.5) ** 2)) ** 8
    mottle = cv2.resize(rng.normal(0, 1, (40, 40)), (size, size), interpolation=cv2.INTER_CUBIC)
    pixels = (30 + 160 * body - 110 * lungs * body + 50 * spine * body + 40 * abdomen + 45 * ribs * lungs * body
              + 10 * mottle * body + rng.normal(0, 6, (size, size)))
    if pneumonia:
        pixels += 80 * np.exp(-(((x - 0.68) / 0.08) ** 2 + ((y - 0.55) / 0.1) ** 2))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def chest_jpeg(seed: int = 0, pneumonia: bool = False, size: int = 1024) -> bytes:
    return encode(chest_xray(seed, pneumonia, size), "JPEG", quality=90)


def make_dicom(pixels: np.ndarray, monochrome1: bool = False, slope: float = 1.0, intercept: float = 0.0,
               window: tuple[float, float] | None = None, frames: int = 1, patient: str = "Doe^Jane",
               transfer_syntax: str | None = None, modality: str = "CR") -> bytes:
    """A 16-bit grayscale DICOM of the given stored values (frames > 1 repeats the image), with a
    made-up patient's tags: what archive jobs and the DICOM checks must never let out."""
    from pydicom.dataset import FileDataset, FileMetaDataset  # only where DICOM is made
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient, "123456", "20200101"
    ds.Modality = modality
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    stored = np.asarray(pixels, np.uint16)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
        stored = np.repeat(stored[np.newaxis], frames, axis=0)
    ds.PixelData = stored.tobytes()
    if transfer_syntax not in (None, ExplicitVRLittleEndian):
        ds.compress(transfer_syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
