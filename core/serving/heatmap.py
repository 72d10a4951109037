"""Heat maps as pictures: scaling, colour mapping and overlays (no TensorFlow)."""
from __future__ import annotations

import cv2
import numpy as np

from core.serving.framing import FrameBox

OVERLAY_COLORMAP = cv2.COLORMAP_JET


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
