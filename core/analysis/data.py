"""The chest X-ray data set: Kaggle folder layout, patient-level splits, model inputs, profile.

No TensorFlow: analysis reads the same listing and split as training (``core.learning.pipeline``
builds tf.data input from it), and analysis may not import the learning layer.

Layout: ``DIR/<split>/{NORMAL,PNEUMONIA}/*.jpeg`` (``DIR/chest_xray/<split>`` is
found too). Patients have several images, so every split here is by patient.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.serving.framing import FrameBox
from core.serving.imaging import ImageError, PreprocessSpec, decode_image, load_model_input
from core.serving.settings import CLASS_NAMES, IMAGE_SUFFIXES, PROJECT_ROOT

DATA_ENV = "CXR_DATA_DIR"
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
VALIDATION_FRACTION = 0.15
HISTOGRAM_BINS = 32
# Decoding threads: OpenCV and Pillow release the GIL, so more threads than cores still help.
DECODE_WORKERS = min(8, (os.cpu_count() or 2) * 2)

# personN_bacteria_M / personN_virus_M -> personN; IM-0115-0001 -> IM-0115;
# NORMAL2-IM-0007-0001 -> NORMAL2-IM-0007.
_PATIENT_PATTERNS = (re.compile(r"^(person\d+)_"), re.compile(r"^((?:NORMAL\d+-)?IM-\d+)-"))


@dataclass(frozen=True)
class Example:
    path: Path
    label: int
    patient: str


def default_data_dir() -> Path | None:
    """The data folder from $CXR_DATA_DIR, else ../shared/data when present."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        return Path(configured)
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.exists() else None


def resolve_root(data_dir: str | Path) -> Path:
    """The folder whose children are the splits, accepting the Kaggle ``chest_xray`` wrapper."""
    root = Path(data_dir)
    if (root / "chest_xray").is_dir():
        root = root / "chest_xray"
    return root


def available_splits(data_dir: str | Path) -> list[str]:
    root = resolve_root(data_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if any((p / c).is_dir() for c in CLASS_NAMES))


def patient_id(file_name: str) -> str:
    """The patient a file belongs to; unknown names count as their own patient."""
    stem = Path(file_name).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def list_examples(data_dir: str | Path, split: str) -> list[Example]:
    """Every image of one split, sorted so runs are reproducible."""
    folder = resolve_root(data_dir) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no split '{split}' under {data_dir} (expected {split}/NORMAL and {split}/PNEUMONIA)")
    examples = [
        Example(path, label, f"{name}/{patient_id(path.name)}")
        for label, name in enumerate(CLASS_NAMES)
        if (folder / name).is_dir()
        for path in sorted((folder / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not examples:
        raise FileNotFoundError(f"no images in {folder}")
    return examples


def split_by_patient(examples: list[Example], fraction: float = VALIDATION_FRACTION, seed: int = 42
                     ) -> tuple[list[Example], list[Example]]:
    """(train, validation) with no patient in both, stratified by class."""
    by_patient: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_patient[example.patient].append(example)
    rng = random.Random(seed)
    held_out: set[str] = set()
    for label in range(len(CLASS_NAMES)):
        patients = sorted(p for p, ex in by_patient.items() if ex[0].label == label)
        rng.shuffle(patients)
        held_out.update(patients[: max(1, round(fraction * len(patients)))] if len(patients) > 1 else [])
    train = [e for e in examples if e.patient not in held_out]
    validation = [e for e in examples if e.patient in held_out]
    return train, validation


def patient_split(data_dir: str | Path, seed: int = 42, max_train_images: int | None = None
                  ) -> tuple[list[Example], list[Example]]:
    """The (train, validation) patient-level split of DIR/train that every model, check and report
    uses; max_train_images subsamples the training side only (quick runs), the same way everywhere."""
    train, validation = split_by_patient(list_examples(data_dir, "train"), seed=seed)
    if max_train_images:
        train = random.Random(seed).sample(train, min(max_train_images, len(train)))
    return train, validation


def labels_of(examples: list[Example]) -> np.ndarray:
    return np.array([e.label for e in examples], dtype=np.int32)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights that make both classes count equally in the loss (as keras.io does)."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {i: float(len(labels) / (len(CLASS_NAMES) * max(c, 1))) for i, c in enumerate(counts)}


@dataclass
class LoadedSet:
    """Model inputs for a list of examples, with what was seen while reading them."""

    examples: list[Example]
    inputs: np.ndarray  # (N, size, size, 1) float32
    labels: np.ndarray
    digests: list[str]
    histograms: np.ndarray  # (N, HISTOGRAM_BINS) pixel-intensity counts of the decoded image
    shapes: list[tuple[int, int]]
    frames: list[FrameBox]  # the part of each decoded image its input shows
    errors: list[tuple[Path, str]]


def _read_one(example: Example, spec: PreprocessSpec):
    data = example.path.read_bytes()
    try:
        loaded = load_model_input(data, spec)
    except ImageError as exc:
        return None, str(exc)
    pixels = loaded.decoded.pixels
    histogram = np.bincount(pixels.ravel() // (256 // HISTOGRAM_BINS), minlength=HISTOGRAM_BINS)
    return (loaded.tensor, hashlib.sha256(data).hexdigest(), histogram, pixels.shape, loaded.frame), None


def load_set(examples: list[Example], spec: PreprocessSpec, workers: int | None = None,
             progress=None) -> LoadedSet:
    """Decode and preprocess every example (threads: OpenCV and Pillow release the GIL)."""
    workers = workers or DECODE_WORKERS
    kept, inputs, digests, histograms, shapes, frames, errors = [], [], [], [], [], [], []
    with ThreadPoolExecutor(workers) as pool:
        for example, (result, error) in zip(examples, pool.map(lambda e: _read_one(e, spec), examples)):
            if progress is not None:
                progress.update(1)
            if error:
                errors.append((example.path, error))
                continue
            kept.append(example)
            inputs.append(result[0])
            digests.append(result[1])
            histograms.append(result[2])
            shapes.append(result[3])
            frames.append(result[4])
    empty = np.zeros((0, spec.size, spec.size, 1), np.float32)
    return LoadedSet(kept, np.stack(inputs) if inputs else empty, labels_of(kept), digests,
                     np.array(histograms).reshape(-1, HISTOGRAM_BINS), shapes, frames, errors)


def decode_grays(examples: list[Example], progress=None) -> tuple[list[Example], list[np.ndarray]]:
    """The decoded 8-bit gray images of the examples that decode, with those examples (threads, as load_set)."""
    def read(example):
        try:
            return decode_image(example.path.read_bytes()).pixels
        except ImageError:
            return None

    kept, grays = [], []
    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        for example, gray in zip(examples, pool.map(read, examples)):
            if progress is not None:
                progress.update(1)
            if gray is not None:
                kept.append(example)
                grays.append(gray)
    return kept, grays


def profile(sets: dict[str, LoadedSet], seed: int) -> dict:
    """A small, image-free summary of the data a model saw, for the dataset explorer."""
    result: dict = {"split_seed": seed, "class_names": list(CLASS_NAMES), "splits": {}}
    all_digests: dict[str, list[str]] = defaultdict(list)
    for name, loaded in sets.items():
        counts = Counter(int(label) for label in loaded.labels)
        histograms = {}
        for label, class_name in enumerate(CLASS_NAMES):
            total = loaded.histograms[loaded.labels == label].sum(axis=0)
            histograms[class_name] = (total / max(total.sum(), 1)).round(6).tolist()
        heights = [s[0] for s in loaded.shapes]
        widths = [s[1] for s in loaded.shapes]
        result["splits"][name] = {
            "counts": {class_name: counts.get(i, 0) for i, class_name in enumerate(CLASS_NAMES)},
            "patients": len({e.patient for e in loaded.examples}),
            "pixel_histograms": histograms,
            "histogram_bins": HISTOGRAM_BINS,
            "image_size": _size_summary(widths, heights),
            "unreadable": len(loaded.errors),
        }
        for example, digest in zip(loaded.examples, loaded.digests):
            all_digests[digest].append(f"{name}/{CLASS_NAMES[example.label]}/{example.path.name}")
    result["duplicates"] = sorted(paths for paths in all_digests.values() if len(paths) > 1)
    return result


def _size_summary(widths: list[int], heights: list[int]) -> dict:
    if not widths:
        return {}
    pairs = Counter(zip(widths, heights)).most_common(20)
    return {
        "width": {"min": int(min(widths)), "median": float(np.median(widths)), "max": int(max(widths))},
        "height": {"min": int(min(heights)), "median": float(np.median(heights)), "max": int(max(heights))},
        "most_common": [{"width": w, "height": h, "count": c} for (w, h), c in pairs],
    }


def profile_folder(data_dir: str | Path, size: int = 64, progress=None) -> dict:
    """The profile of every split in a folder, as training writes it (at a small size, for speed)."""
    spec = PreprocessSpec(size)
    sets = {split: load_set(list_examples(data_dir, split), spec, progress=progress)
            for split in available_splits(data_dir)}
    return profile(sets, seed=0)


def sample_files(data_dir: str | Path, split: str, per_class: int = 8, seed: int = 0) -> dict[str, list[Path]]:
    """A few files per class, chosen at random but reproducibly, for a sample grid."""
    examples = list_examples(data_dir, split)
    rng = random.Random(seed)
    return {name: sorted(rng.sample([e.path for e in examples if e.label == label],
                                    min(per_class, sum(e.label == label for e in examples))))
            for label, name in enumerate(CLASS_NAMES)}
