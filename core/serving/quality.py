"""Is this a chest X-ray, and is it good enough to screen?

Refusals raise :class:`NotChestXRayError` before any screening result exists;
milder problems come back as warnings shown beside the result.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np

from core.serving import photo
from core.serving.imaging import DecodedImage, ImageError, PreprocessSpec, preprocess

# A gray X-ray saved as colour JPEG scores about 0-2; photos score 15 and more.
MAX_COLOURFULNESS = 8.0
# Chest radiographs are roughly square (portrait or landscape up to about 1:1.6).
MAX_ASPECT_RATIO = 2.0
MIN_CONTRAST_STD = 0.08  # intensity standard deviation on the [0, 1] scale
MAX_CLIPPED_FRACTION = 0.35
SMALL_SIDE = 200
# The not-a-chest-X-ray check is one-class: fitted on real X-rays only, it refuses
# what lies far from them by either of two measures.
# 1. Layout: distance from the main modes of variation of chest X-rays (PCA at
#    32x32 after standardising intensity). Two subspaces, as framed and cropped to
#    the lung field, because clinics frame tighter than the training hospital: one
#    subspace fitted on the training framing refused 36% of lung-field crops.
# 2. Grey levels and texture: the intensity histogram and the mean gradients at
#    64x64, a Mahalanobis distance from real X-rays. Grey photos can have a
#    chest-like layout, rarely a radiograph's histogram and smoothness.
DETECTOR_FILE = "xray_detector.npz"
DETECTOR_SPEC = PreprocessSpec(32)
DETECTOR_COMPONENTS = 10
PROFILE_SIDE = 64
PROFILE_BINS = 16
PROFILE_PERCENTILES = (1, 99)
# Thresholds: these quantiles of held-out real X-rays' distances (both framings),
# widened by a margin so that X-rays from other machines are not refused
# (checked by benchmarks/xray_check.py).
LAYOUT_QUANTILE, LAYOUT_MARGIN = 99.5, 1.08
PROFILE_QUANTILE, PROFILE_MARGIN = 99.9, 1.2
# Upside down: the layout fits real X-rays better once turned half round, by more than
# this. Upside-down X-rays still lie near the subspaces (92% passed the layout check);
# the comparison caught all 811 held-out ones and refused none upright (benchmarks/xray_check.py).
UPSIDE_DOWN_MARGIN = 0.02


# Photos of films (core.serving.photo): what makes one unusable, what only degrades it, and
# what to do about it. Thresholds measured on the photo proxy (core.analysis.photos) and on
# digital X-rays of the validation patients, which reach none of them.
GLARE_REFUSED = 0.05  # share of the film saturated by a reflection
GLARE_WARNED = 0.005
MIN_FILM_PIXELS = 160  # the film's shorter side in the photo: the models read 160 pixels
SMALL_FILM_PIXELS = 400
# core.serving.photo.sharpness: validation X-rays 0.028 and more; films photographed with a blur of
# 4 photo pixels 0.020-0.025, with the proxy's soft blur (2.5) 0.026-0.031.
BLURRED_BELOW = 0.022
MOIRE_ABOVE = 20.0  # core.serving.photo.moire: photos of a screen 77-124, films on a lightbox or window 0-4
KEYSTONE_WARNED = 1.25
# Uneven light is warned where it is flattened (core.serving.photo.UNEVEN_LIGHT): flattening takes off
# what the light around the film shows, not what the film's own anatomy hides, so the user is asked to
# take it again all the same.
UNEVEN_LIGHT_WARNED = photo.UNEVEN_LIGHT
RETAKE = {
    "glare": "tilt the phone so the light does not reflect on the film",
    "blur": "hold the phone still and tap the film on the screen to focus",
    "moire": "this looks like a photo of a screen: take a screenshot or export the image instead",
    "small": "move closer, so that the film fills most of the picture",
    "keystone": "hold the phone parallel to the film",
    "uneven light": "move away from the window, or use the whole lightbox",
    "not found": ("take it again with all four edges of the film in view, the film filling most of the picture, "
                  "on a plain lightbox"),
}


class NotChestXRayError(ImageError):
    """Decodable, but not a chest X-ray: the image is rejected, not screened."""


class UnusablePhotoError(NotChestXRayError):
    """A photo of a film too degraded to screen: rejected, with how to take it again."""


def photo_warnings(decoded: DecodedImage) -> list[str]:
    """Raise UnusablePhotoError for a photo of a film that cannot be screened; return what
    degrades it, each with how to retake it."""
    quality = decoded.straightened.quality if decoded.straightened else None
    if quality is None:
        return []
    if quality.glare >= GLARE_REFUSED:
        raise UnusablePhotoError(f"glare covers {quality.glare:.0%} of the film: {RETAKE['glare']}, then take it again")
    if quality.film_pixels < MIN_FILM_PIXELS:
        raise UnusablePhotoError(f"the film is only {quality.film_pixels} pixels across in the photo: "
                                 f"{RETAKE['small']}, then take it again")
    found = []
    if quality.glare >= GLARE_WARNED:
        found.append(f"glare on {quality.glare:.1%} of the film: {RETAKE['glare']}")
    if quality.sharpness < BLURRED_BELOW:
        found.append(f"the photo is blurred: {RETAKE['blur']}")
    if quality.moire > MOIRE_ABOVE:
        found.append(f"moire: {RETAKE['moire']}")
    if quality.film_pixels < SMALL_FILM_PIXELS:
        found.append(f"the film is small in the photo ({quality.film_pixels} pixels): {RETAKE['small']}")
    if quality.keystone > KEYSTONE_WARNED:
        found.append(f"the photo was taken at a slant: {RETAKE['keystone']}")
    if quality.uneven_light > UNEVEN_LIGHT_WARNED:
        found.append(f"the light is uneven across the film: {RETAKE['uneven light']}")
    return found


def _standardised(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    return (flat - flat.mean(1, keepdims=True)) / np.maximum(flat.std(1, keepdims=True), 1e-3)


def layout_input(gray: np.ndarray) -> np.ndarray:
    """What the layout measure reads: (32, 32, 1) in [0, 1]."""
    return preprocess(gray, DETECTOR_SPEC)


def profile_features(gray: np.ndarray) -> np.ndarray:
    """Grey-level histogram (square-rooted, so rare levels count) and log mean gradients."""
    small = cv2.resize(gray, (PROFILE_SIDE, PROFILE_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    # Stretched between its 1st and 99th percentiles: an under-exposed X-ray whose
    # bright marker kept the full 8-bit range still has a radiograph's histogram.
    low, high = np.percentile(small, PROFILE_PERCENTILES)
    small = np.clip((small - low) * np.float32(255.0 / max(high - low, 1.0)), 0, 255).astype(np.float32)
    histogram = np.histogram(small, bins=PROFILE_BINS, range=(0, 256))[0] / small.size
    across = np.abs(np.diff(small, axis=1)).mean()
    down = np.abs(np.diff(small, axis=0)).mean()
    laplacian = np.abs(cv2.Laplacian(small, cv2.CV_32F)).mean()
    return np.concatenate([np.sqrt(histogram), np.log1p([across, down, laplacian])])


@dataclass(frozen=True, eq=False)
class XrayCheck:
    """The X-ray check's two measures of one image, with the detector that took them: taken while
    decoding (core.serving.imaging), they are not taken again by check_chest_xray."""

    detector: XrayDetector
    layout_residual: float
    radiograph_profile: bool

    def passes(self, layout_share: float = 1.0) -> bool:
        """A radiograph's grey levels and texture, and a chest radiograph's layout: a residual within this
        share of the detector's threshold."""
        return self.radiograph_profile and self.layout_residual <= layout_share * self.detector.layout_threshold


@dataclass(frozen=True)
class XrayDetector:
    """One-class check: how far an image lies from real chest X-rays, by layout and by grey levels."""

    means: np.ndarray  # (framings, 32*32): one layout subspace per framing
    components: np.ndarray  # (framings, k, 32*32), orthonormal rows
    layout_threshold: float
    profile_mean: np.ndarray  # (features,)
    profile_precision: np.ndarray  # (features, features): inverse covariance
    profile_threshold: float

    def residuals(self, inputs: np.ndarray) -> np.ndarray:
        """Root-mean-square reconstruction error from the nearest framing's subspace, for
        (N, 32, 32, 1) layout inputs."""
        flat = _standardised(inputs)
        errors = []
        for mean, components in zip(self.means, self.components):
            centred = flat - mean
            reconstruction = (centred @ components.T) @ components
            errors.append(np.sqrt(((centred - reconstruction) ** 2).mean(axis=1)))
        return np.min(errors, axis=0)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances of (N, features) grey-level profiles."""
        centred = features - self.profile_mean
        return np.einsum("ij,jk,ik->i", centred, self.profile_precision, centred)

    def layout_residual(self, gray: np.ndarray) -> float:
        return float(self.residuals(layout_input(gray)[np.newaxis])[0])

    def has_chest_layout(self, gray: np.ndarray) -> bool:
        return self.layout_residual(gray) <= self.layout_threshold

    def looks_upside_down(self, gray: np.ndarray, residual: float | None = None) -> bool:
        """Neck and shoulders above, abdomen below: the layout is far from symmetric top to
        bottom, so the image is compared with itself turned half round. ``residual``: the
        image's own layout residual, when the caller has it already."""
        as_is = self.layout_residual(gray) if residual is None else residual
        return as_is - self.layout_residual(np.ascontiguousarray(gray[::-1, ::-1])) > UPSIDE_DOWN_MARGIN

    def has_radiograph_profile(self, gray: np.ndarray) -> bool:
        return float(self.distances(profile_features(gray)[np.newaxis])[0]) <= self.profile_threshold

    def check(self, gray: np.ndarray) -> XrayCheck:
        return XrayCheck(self, self.layout_residual(gray), self.has_radiograph_profile(gray))

    @classmethod
    def fit(cls, framings: list[np.ndarray], held_out_framings: list[np.ndarray],
            profiles: np.ndarray, held_out_profiles: np.ndarray) -> XrayDetector:
        """A PCA subspace per framing of training X-rays (layout inputs), a Gaussian on their
        profiles; the thresholds from X-rays of other patients, every framing pooled."""
        means, components = [], []
        for inputs in framings:
            flat = _standardised(inputs)
            mean = flat.mean(axis=0)
            _, _, rows = np.linalg.svd(flat - mean, full_matrices=False)
            means.append(mean)
            components.append(rows[:DETECTOR_COMPONENTS])
        precision = np.linalg.inv(np.cov(profiles.T) + 1e-6 * np.eye(profiles.shape[1]))
        unthresholded = cls(np.stack(means), np.stack(components), np.inf, profiles.mean(axis=0), precision, np.inf)
        layout = np.percentile(unthresholded.residuals(np.concatenate(held_out_framings)), LAYOUT_QUANTILE)
        profile = np.percentile(unthresholded.distances(held_out_profiles), PROFILE_QUANTILE)
        return replace(unthresholded, layout_threshold=float(layout * LAYOUT_MARGIN),
                       profile_threshold=float(profile * PROFILE_MARGIN))

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> XrayDetector:
        with np.load(path, allow_pickle=False) as stored:
            values = {f.name: stored[f.name] for f in fields(cls)}
        return cls(**{k: float(v) if k.endswith("threshold") else v for k, v in values.items()})


# What a health worker can fix: an X-ray saved sideways, upside down, mirrored or with inverted grey levels.
_ORIENTATIONS = {
    "rotated a quarter turn clockwise": lambda g: np.rot90(g, 1),
    "rotated a quarter turn anticlockwise": lambda g: np.rot90(g, -1),
    "upside down": lambda g: np.rot90(g, 2),
    "inverted (bones dark, lungs light)": lambda g: 255 - g,
}


UPRIGHT = "check that it is upright, not mirrored and not inverted"
CHECK_UPRIGHT = f"if it is a chest X-ray, {UPRIGHT}"
NOT_FOUND = f"the film was not found in the photo: {RETAKE['not found']}"


def orientation_hint(gray: np.ndarray, detector: XrayDetector) -> str | None:
    """A hint when the image becomes a chest radiograph once turned or inverted, else None."""
    for problem, fix in _ORIENTATIONS.items():
        if detector.has_chest_layout(np.ascontiguousarray(fix(gray))):
            return turned_hint(problem)
    return None


def turned_hint(problem: str) -> str:
    """The hint for an image that is a chest radiograph once ``problem`` (an _ORIENTATIONS key) is undone."""
    return f"it looks {problem}: save it upright with bones light, then upload it again"


def layout_hint(decoded: DecodedImage, detector: XrayDetector) -> str:
    """What to change when the layout is refused: a photo whose film was not found (or was mistaken: what
    was straightened is no radiograph) is taken again; a digital file is turned or inverted back. Where
    only a drawn margin or the check sent the finder and it found nothing, the picture may be either."""
    if decoded.input_kind == "photo" or decoded.not_found == "photo":
        return NOT_FOUND
    turned = orientation_hint(decoded.pixels, detector)
    if turned:
        return turned
    if decoded.not_found == "unsure":
        return f"if it is a photo of a film, {RETAKE['not found']}; if it is a digital file, {UPRIGHT}"
    return CHECK_UPRIGHT


LIGHT_AS_CAUSE = "the light may be why"  # what a refusal adds before a photo's glare or uneven light


# What a photo flagged with light on the film is told. Such light flags healthy children and misses no
# more sick ones. On the second renderer (docs/benchmarks.md, 400 validation X-rays) normal X-rays whose
# uneven light was measured kept a specificity of 0.57 against 0.83 as digital files, and under glare 0.69
# against 0.87; sensitivity under uneven light was 0.997 (0.990 for the same X-rays' digital files), under
# the first renderer's slight glare 0.996 (0.990). A photo is taken again in a minute; a referral can cost
# a family a journey. A second photo flagged again, or one that cannot be taken in better light, is referred.
RETAKE_BEFORE_REFERRAL = ("light on the film raises healthy children's scores: take the photo again as the "
                          "warning says, and refer if the new photo is flagged too or cannot be taken in "
                          "better light")


def light_on_film(warnings: list[str]) -> list[str]:
    """A photo's warnings of light on the film's front: glare and uneven light, whose haze reads as an
    opacity, changes the film's grey levels, and over the lower film reads as a chest upside down."""
    return [w for w in warnings if RETAKE["glare"] in w or RETAKE["uneven light"] in w]


def _light_as_cause(warnings: list[str], unless: str) -> str:
    """A photo's light on the film, as what may have made the film fail a check."""
    found = light_on_film(warnings)
    return f"; {unless}, {LIGHT_AS_CAUSE}: {'; '.join(found)}" if found else ""


def check_chest_xray(decoded: DecodedImage, detector: XrayDetector | None = None) -> list[str]:
    """Raise NotChestXRayError for what is no chest X-ray; return quality warnings.

    Without a fitted detector only the colour and shape checks apply."""
    height, width = decoded.pixels.shape
    if decoded.colourfulness > MAX_COLOURFULNESS:
        raise NotChestXRayError("not a chest X-ray: the image is in colour")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise NotChestXRayError(f"not a chest X-ray: the image is too elongated ({width}x{height})")
    warnings = photo_warnings(decoded)
    if detector is not None:
        # Measured once: by decoding where this detector read the picture as it is, and the upside-down
        # test reuses the residual.
        kept = decoded.xray_check
        measured = kept if kept is not None and kept.detector is detector else detector.check(decoded.pixels)
        if measured.layout_residual > detector.layout_threshold:
            raise NotChestXRayError("not a chest X-ray: the image does not have the layout of a chest radiograph; "
                                    + layout_hint(decoded, detector))
        if not measured.radiograph_profile:
            raise NotChestXRayError("not a chest X-ray: its grey levels and texture are not those of a radiograph"
                                    + (f"; {NOT_FOUND}" if decoded.not_found == "photo" else "")
                                    + _light_as_cause(warnings, "if it is a chest X-ray"))
        if detector.looks_upside_down(decoded.pixels, measured.layout_residual):
            if decoded.input_kind == "photo":
                raise NotChestXRayError("the film looks upside down in the photo: turn it upright, "
                                        "then take the photo again" + _light_as_cause(warnings, "if it is upright"))
            raise NotChestXRayError("the X-ray is upside down: save it upright, then upload it again")
    pixels = decoded.pixels.astype(np.float32) / 255.0
    clipped = float(np.mean((decoded.pixels <= 2) | (decoded.pixels >= 253)))
    return warnings + quality_warnings(float(pixels.std()), clipped, height, width)


def quality_warnings(contrast: float, clipped: float, height: int, width: int) -> list[str]:
    """The warnings of an image screened all the same, from its measures: intensity standard deviation
    on the [0, 1] scale, share of pixels at the ends of the 8-bit range, size. One source of their words
    for the server and for the browser (ui/on_device.py), which measures the same things."""
    warnings = []
    if contrast < MIN_CONTRAST_STD:
        warnings.append("low contrast: the result may be unreliable")
    if clipped > MAX_CLIPPED_FRACTION:
        warnings.append(f"{clipped:.0%} of pixels are saturated: check exposure")
    if min(height, width) < SMALL_SIDE:
        warnings.append(f"low resolution ({width}x{height}): the result may be unreliable")
    return warnings
