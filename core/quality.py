"""Is this a chest X-ray, and is it good enough to screen?

Refusals raise :class:`NotChestXRayError` before any screening result exists;
milder problems come back as warnings shown beside the result.
"""
from __future__ import annotations

import numpy as np

from core.imaging import DecodedImage, ImageError

# A gray X-ray saved as colour JPEG scores about 0-2; photos score 15 and more.
MAX_COLOURFULNESS = 8.0
# Chest radiographs are roughly square (portrait or landscape up to about 1:1.6).
MAX_ASPECT_RATIO = 2.0
MIN_CONTRAST_STD = 0.08  # intensity standard deviation on the [0, 1] scale
MAX_CLIPPED_FRACTION = 0.35
SMALL_SIDE = 200


class NotChestXRayError(ImageError):
    """Decodable, but not a chest X-ray: the image is rejected, not screened."""


def check_chest_xray(decoded: DecodedImage) -> list[str]:
    """Raise NotChestXRayError for what is clearly no chest X-ray; return quality warnings."""
    height, width = decoded.pixels.shape
    if decoded.colourfulness > MAX_COLOURFULNESS:
        raise NotChestXRayError("not a chest X-ray: the image is in colour")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise NotChestXRayError(f"not a chest X-ray: the image is too elongated ({width}x{height})")
    warnings = []
    pixels = decoded.pixels.astype(np.float32) / 255.0
    if pixels.std() < MIN_CONTRAST_STD:
        warnings.append("low contrast: the result may be unreliable")
    clipped = float(np.mean((decoded.pixels <= 2) | (decoded.pixels >= 253)))
    if clipped > MAX_CLIPPED_FRACTION:
        warnings.append(f"{clipped:.0%} of pixels are saturated: check exposure")
    if min(height, width) < SMALL_SIDE:
        warnings.append(f"low resolution ({width}x{height}): the result may be unreliable")
    return warnings
