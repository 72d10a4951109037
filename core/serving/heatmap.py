"""Heat maps as pictures: scaling, colour mapping and overlays (no TensorFlow)."""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from core.serving.framing import FrameBox

OVERLAY_COLORMAP = cv2.COLORMAP_JET
# Occlusion hides a square of an eighth of the side, moved by a sixteenth: large enough to
# cover an opacity, small enough to place it within a lung.
OCCLUSION_PATCH_FRACTION = 1 / 8
OCCLUSION_STRIDE_FRACTION = 1 / 16
# Occluded copies per forward pass. Eight, not 64: one heat map of the default model (three runs each,
# two shared cores, 2026-12-06) peaked at 224-244 MB of resident memory with 64, at 126-159 MB with eight,
# in about the same time (0.4-0.9 s); the public demo's server must stay under its budget (issue #39).
OCCLUSION_BATCH = 8


def normalise(heat: np.ndarray) -> np.ndarray:
    """Negative evidence dropped (ReLU, as Grad-CAM does), then scaled so the peak is 1."""
    heat = np.maximum(np.asarray(heat, np.float32), 0.0)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Coarse (N, h, w) maps at the input's (height, width), each normalised to [0, 1]."""
    return np.stack([normalise(cv2.resize(np.asarray(m, np.float32), (size[1], size[0]),
                                          interpolation=cv2.INTER_LINEAR)) for m in maps])


def member_mean(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (H, W) map from the (members, h, w) maps of one image: each member's map scaled to
    [0, 1] at the input's resolution, then averaged, so that no member outweighs the others."""
    return normalise(upsample(maps, size).mean(axis=0))


def occlusion(score: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
              patch_fraction: float = OCCLUSION_PATCH_FRACTION, stride_fraction: float = OCCLUSION_STRIDE_FRACTION,
              batch_size: int = OCCLUSION_BATCH) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2014) for one (H, W, 1) input: how much the
    pneumonia probability falls when each region is hidden. `score` maps a batch of inputs to
    probabilities (an ONNX network, a Keras model), so it works for any model, with no gradients."""
    height, width = image.shape[:2]
    patch = max(1, round(height * patch_fraction))
    stride = max(1, round(height * stride_fraction))
    fill = float(image.mean())  # a neutral gray, not black, which is itself a feature
    corners = [(y, x) for y in range(0, height - patch + 1, stride) for x in range(0, width - patch + 1, stride)]
    base = float(np.asarray(score(image[np.newaxis])).reshape(-1)[0])
    drops = np.zeros((height, width), np.float32)
    counts = np.zeros((height, width), np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        batch = np.repeat(image[np.newaxis], len(chunk), axis=0)
        for i, (y, x) in enumerate(chunk):
            batch[i, y:y + patch, x:x + patch] = fill
        for (y, x), p in zip(chunk, np.asarray(score(batch)).reshape(-1)):
            drops[y:y + patch, x:x + patch] += base - p
            counts[y:y + patch, x:x + patch] += 1
    return normalise(drops / np.maximum(counts, 1))


def overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.4, frame: FrameBox | None = None) -> np.ndarray:
    """The heat map, resized to the image and colour-mapped, blended over it: (H, W, 3) RGB uint8.

    With a frame (the part of the image the model read), only that part is coloured: outside
    it the model saw nothing, which blue ("least weight") would misstate.
    """
    height, width = gray.shape[:2]
    heat = cv2.resize(np.asarray(heat, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    coloured = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), OVERLAY_COLORMAP)
    base = cv2.cvtColor(np.asarray(gray, np.uint8), cv2.COLOR_GRAY2BGR)
    blended = cv2.addWeighted(coloured, float(opacity), base, 1.0 - float(opacity), 0.0)
    if frame is not None:
        unseen = np.ones((height, width), bool)
        unseen[frame.top:frame.bottom, frame.left:frame.right] = False
        blended[unseen] = base[unseen]
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def to_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB or gray uint8 array."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode PNG")
    return encoded.tobytes()
