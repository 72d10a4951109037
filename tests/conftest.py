"""Shared fixtures: synthetic images and data sets (never the real X-rays), a tiny trained model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from core.analysis import data
from core.analysis.synthetic import chest_xray as xray_like  # shared by the test modules
from core.analysis.synthetic import encode

TINY_SIZE = 32
ROOT = Path(__file__).resolve().parent.parent
ON_DEVICE_FRONTEND = ROOT / "components" / "on_device" / "streamlit_cxr_on_device" / "frontend"
# A statement for a node script, inside an async function: OpenCV.js started from its two vendored parts
# by the page's own loader (frontend/opencv.js).
OPENCV_IN_NODE = (
    f"const cv = await (await import({json.dumps((ON_DEVICE_FRONTEND / 'opencv.js').as_uri())})).startOpenCv("
    f"require({json.dumps(str(ON_DEVICE_FRONTEND / 'vendor' / 'opencv-js' / 'opencv-glue.js'))}), "
    f"require('fs').readFileSync({json.dumps(str(ON_DEVICE_FRONTEND / 'vendor' / 'opencv-js' / 'opencv.wasm'))}));")


def run_core(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m core ARGS` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=timeout)


def make_dataset(root: Path, split: str = "train", per_class: int = 24, size: int = 96) -> Path:
    """Kaggle layout with patient-style names: two images per patient."""
    for label, name in enumerate(data.CLASS_NAMES):
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            patient, view = divmod(i, 2)
            file = (f"person{patient}_bacteria_{i}.jpeg" if label else f"IM-{patient:04d}-{view + 1:04d}.jpeg")
            (folder / file).write_bytes(encode(xray_like(1000 * label + i, bool(label), size)))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "train", per_class=30)
    make_dataset(root, "test", per_class=10)
    return root


@pytest.fixture(scope="session")
def tiny_models(tiny_data, tmp_path_factory) -> Path:
    """A models folder holding one cnn_small trained for one epoch at 32 px."""
    from core.learning.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("models")
    train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=1, size=TINY_SIZE, models_dir=folder),
          log=lambda *_: None)
    return folder


@pytest.fixture(scope="session")
def detector():
    """The shipped not-a-chest-X-ray check."""
    from core.serving import registry

    shipped = registry.load_detector()
    assert shipped is not None, "models/xray_detector.npz is missing: run python -m core fit-detector"
    return shipped


@pytest.fixture
def sample_jpeg() -> bytes:
    return encode(xray_like(7, True, 128))


def real_data_dir() -> Path | None:
    folder = data.default_data_dir()
    return folder if folder and data.available_splits(folder) else None


requires_real_data = pytest.mark.skipif(
    real_data_dir() is None,
    reason=f"real chest X-ray data not found: set ${data.DATA_ENV} or provide ../shared/data")
