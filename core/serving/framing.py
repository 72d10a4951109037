"""Framing normalisation: every X-ray cropped to the same standard frame around the lung field.

The withheld period's healthy children were read as pneumonia when their lungs
filled the frame: a network trained on loosely framed X-rays takes "the chest
fills the image" as evidence. Cropping every image, at training and at
screening alike, to the same frame around the lungs takes that cue away.

Where that frame lies is told by a small localiser network (trained by
``core.learning.framing``, self-supervised): shown any crop of a training X-ray,
it says where the uncropped image's frame lies relative to what it sees. The
standard frame is a fixed box of that frame, so a loosely framed X-ray is cut
tighter and an X-ray already framed tightly is cut little or not at all. (The shipped
localiser reads the frame's size; its position error equals guessing the middle.)
Runs in ONNX Runtime, so screening still needs no TensorFlow.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.serving.settings import PROJECT_ROOT

# The localiser ships beside the models; a classifier's card records its hash.
LOCALISER_PATH = PROJECT_ROOT / "models" / "framing_localiser.onnx"
LOCALISER_SIZE = 96  # the localiser reads a coarse view: the body's outline, not its texture
# The lung field in the training hospital's framing: centred a little above the
# image's middle, (row, column) as fractions of the frame (core.analysis.shift
# crops around the same point).
LUNG_FIELD_CENTRE = (0.45, 0.5)
# The standard frame keeps 75% of each side of a training X-ray around the lung
# field: tight enough that framing no longer says much, loose enough to keep the
# lung bases and costophrenic angles, where pneumonia often shows.
STANDARD_SIDE = 0.75


@dataclass(frozen=True)
class FrameBox:
    """A box in an image's pixels: rows top..bottom, columns left..right (ends excluded)."""

    top: int
    left: int
    bottom: int
    right: int

    def crop(self, gray: np.ndarray) -> np.ndarray:
        return gray[self.top:self.bottom, self.left:self.right]

    def place(self, heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A heat map of the box's contents placed in an image of this (height, width), zero elsewhere."""
        placed = np.zeros(shape, np.float32)
        placed[self.top:self.bottom, self.left:self.right] = cv2.resize(
            np.asarray(heat, np.float32), (self.right - self.left, self.bottom - self.top),
            interpolation=cv2.INTER_LINEAR)
        return placed


def frame_box(prediction: np.ndarray, height: int, width: int, side: float = STANDARD_SIDE) -> FrameBox:
    """The standard frame in an image's pixels, from the localiser's output for it.

    The output is the training frame in the image's own coordinates: its centre
    (row, column) and the log of its size (height, width), as fractions of the
    image. Parts of the standard frame outside the image are cut off: an X-ray
    framed more tightly than the standard is kept whole along that side.
    """
    centre_row, centre_col, log_height, log_width = (float(v) for v in prediction)
    frame_height, frame_width = np.exp(log_height), np.exp(log_width)
    row = centre_row + (LUNG_FIELD_CENTRE[0] - 0.5) * frame_height
    col = centre_col + (LUNG_FIELD_CENTRE[1] - 0.5) * frame_width
    top, bottom = _span(row, side * frame_height, height)
    left, right = _span(col, side * frame_width, width)
    return FrameBox(top, left, bottom, right)


def _span(centre: float, length: float, pixels: int) -> tuple[int, int]:
    """(start, end) pixels of a span of the given centre and length (fractions), moved inside the image."""
    if length >= 1.0:
        return 0, pixels
    start = min(max(centre - length / 2, 0.0), 1.0 - length)
    first = round(start * pixels)
    return first, max(first + 1, round((start + length) * pixels))


class FramingLocaliser:
    """The shipped localiser, checked against the hash a model card records (thread-safe)."""

    def __init__(self, path: Path):
        from core.serving.network import cpu_session  # ONNX Runtime loads only for a framed model

        self._session = cpu_session(path)
        self._input = self._session.get_inputs()[0].name

    def predict(self, grays: list[np.ndarray]) -> np.ndarray:
        """The localiser's outputs (N, 4) for 8-bit gray images of any size."""
        batch = np.stack([localiser_input(gray) for gray in grays])
        return self._session.run(None, {self._input: batch})[0]

    def box(self, gray: np.ndarray, side: float = STANDARD_SIDE) -> FrameBox:
        return frame_box(self.predict([gray])[0], *gray.shape, side=side)


def localiser_input(gray: np.ndarray) -> np.ndarray:
    """What the localiser reads: (LOCALISER_SIZE, LOCALISER_SIZE, 1) float32 in [0, 1]. Its training cuts
    are shrunk by a 2x2 average then bilinear sampling (core.learning.framing), close to this area shrink."""
    small = cv2.resize(gray, (LOCALISER_SIZE, LOCALISER_SIZE), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) / 255.0)[..., np.newaxis]


def shipped_localiser_sha256() -> str:
    """The hash of the localiser in models/, which a model trained now will be tied to."""
    from core.serving.registry import sha256_of  # not at the top: registry imports imaging, which imports this

    if not LOCALISER_PATH.exists():
        raise FileNotFoundError(f"{LOCALISER_PATH.name} is missing: run `python -m core train-localiser` first")
    return sha256_of(LOCALISER_PATH)


_loaded: dict[str, FramingLocaliser] = {}
_loading = threading.Lock()


def localiser(sha256: str) -> FramingLocaliser:
    """The shipped localiser, once per process, refused unless its file has the given hash."""
    with _loading:
        if sha256 not in _loaded:
            from core.serving.registry import verified_path

            _loaded[sha256] = FramingLocaliser(verified_path(LOCALISER_PATH.name, sha256, LOCALISER_PATH.parent))
        return _loaded[sha256]
