"""Image input and preprocessing: bytes in, model tensor out.

Training (``core.learning.pipeline``, through ``core.analysis.data``) and serving
(``core.serving.predictor``) both call :func:`load_model_input`, so a model sees
exactly the same tensor for the same file at training and at screening time.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from core.serving import framing, photo
from core.serving.errors import ImageError
from core.serving.photo import Straightened
from core.serving.settings import MAX_FILE_BYTES, MAX_PIXELS

if TYPE_CHECKING:  # core.serving.quality imports this module
    from core.serving.quality import XrayCheck, XrayDetector

# --- Configurable limits (the file-size and pixel limits are in core.serving.settings) ---
# Smaller than this cannot hold a readable chest X-ray.
MIN_SIDE = 32
# A strip with sides further apart than this holds no film or viewer to look for (the X-ray check then
# refuses it as too elongated); the finder's shrunken copies of it would have no pixels across.
MAX_ELONGATION = 20
# Large JPEGs are decoded at no less than this size (see _decode_raster): the
# models read 64-160 px. Measured on 102 validation X-rays enlarged to 1024 px:
# decoding at 256 rather than 512 px moved probabilities by 0.003 on average
# (0.08 at most) and changed no label, for a quarter of the decoding work.
DECODE_SIDE = 256
# A large DICOM is reduced as a large JPEG is decoded (core.serving.dicom.reduced): by a whole factor of
# at most MAX_REDUCTION, to no less than DECODE_SIDE pixels a side. The checks, the framing and the model
# read at most that; at full size a 1024-px DICOM cost 6 ms more CPU in them. This constant and the next
# are here, not in core.serving.dicom, so that the on-device page sends them without importing pydicom.
MAX_REDUCTION = 8
# Modalities of projection radiographs (computed, digital, radiographic; "other" and secondary
# capture for exports). A CT or MR slice, an ultrasound frame or a mammogram is not screened.
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT", "SC")

# A picture is read as digital, the film finder never run, when the X-ray check passes it as it is with
# its layout residual within this share of the check's threshold. Photos of films on a lightbox lie at
# 0.89 of the threshold and above as they are, some passing it (the photo proxy on 240 validation
# X-rays); 99% of the 5,216 training X-rays lie within 0.80, and the finder cuts none of the rest.
DIGITAL_LAYOUT_SHARE = 0.8
# EXIF tags a camera writes and imaging software does not: a picture carrying either was taken with a
# phone or a camera, so the film finder looks for the film in it.
CAMERA_TAGS = (ExifTags.Base.Make, ExifTags.Base.Model)
# Formats that keep every pixel (of those sniff_format takes): a margin of one exact grey in them is drawn,
# not a lightbox a phone's JPEG flattened, unless a camera's EXIF says the file was a photo first.
LOSSLESS_FORMATS = ("PNG",)
# Pillow's modes of more than 8 bits: imaging software writes them, cameras do not (no film finder).
DEEP_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I": 16, "F": 32}

DICOM_MAGIC_OFFSET = 128
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

# Pillow refuses (rather than warns about) images above this many pixels.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class PreprocessSpec:
    """How a grayscale image becomes a model input; stored in each model card."""

    size: int = 160
    clahe: bool = False
    # Global histogram equalisation of the frame: every monotone change of the grey
    # levels (exposure, contrast, a machine's look-up table) gives the same input.
    equalise: bool = False
    # The sha256 of the framing localiser whose standard frame every image is cut to
    # (core.serving.framing), or None for the whole image; and that frame's side.
    frame: str | None = None
    frame_side: float = framing.STANDARD_SIDE

    def before_contrast(self) -> PreprocessSpec:
        """This spec up to its resize: what training loads when it augments before the contrast step."""
        return replace(self, clahe=False, equalise=False)

    def to_dict(self) -> dict:
        spec = {"size": self.size, "clahe": self.clahe, "channels": 1, "range": [0.0, 1.0]}
        if self.equalise:
            spec["equalise"] = True
        if self.frame:
            spec["frame"] = {"localiser": framing.LOCALISER_PATH.name, "sha256": self.frame, "side": self.frame_side}
        return spec

    @classmethod
    def from_dict(cls, spec: dict) -> PreprocessSpec:
        frame = spec.get("frame") or {}
        return cls(size=int(spec["size"]), clahe=bool(spec.get("clahe", False)),
                   equalise=bool(spec.get("equalise", False)), frame=frame.get("sha256"),
                   frame_side=float(frame.get("side", framing.STANDARD_SIDE)))


@dataclass
class DecodedImage:
    """A decoded image as 8-bit grayscale, with what was learnt while decoding."""

    pixels: np.ndarray  # (H, W) uint8: the radiograph, straightened out of a photo or screenshot
    format: str  # "JPEG", "PNG" or "DICOM"
    bit_depth: int
    # Mean chroma (Hasler & Suesstrunk 2003) of the radiograph after white balance: zero
    # for a gray X-ray, or a film photographed in tinted light; large for a colour photo.
    colourfulness: float = 0.0
    # A photo of a film or a screenshot of a viewer: where the radiograph was, the picture as sent.
    straightened: Straightened | None = field(default=None, repr=False)
    # Where the finder looked and found no radiograph: "photo" where a camera's EXIF or a tint said a
    # photo (or it was found at first sight and lost at full size), "unsure" where only a drawn margin or
    # the X-ray check sent it there; None where it found one or never looked. The refusal's advice follows.
    not_found: str | None = None
    # The X-ray check of these pixels where decoding took it (a raster file read as digital without
    # evidence of a photo or a screenshot), for core.serving.quality.check_chest_xray to reuse.
    xray_check: XrayCheck | None = field(default=None, repr=False)
    # DICOM tags that can identify a patient: kept apart so nothing shows or
    # exports them unless a user asks for them on purpose.
    private_tags: dict = field(default_factory=dict, repr=False)

    @property
    def input_kind(self) -> str:
        """digital, dicom, photo (of a film or a screen) or screenshot."""
        if self.format == "DICOM":
            return "dicom"
        return self.straightened.kind if self.straightened else "digital"


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10: a 128-byte preamble, then "DICM"."""
    return data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM"


def sniff_format(data: bytes) -> str:
    """The container format from the magic bytes, never from the file name."""
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if is_dicom(data):
        return "DICOM"
    raise ImageError("not a supported image: expected a JPEG, PNG or DICOM file")


def decode_image(data: bytes) -> DecodedImage:
    """Decode JPEG, PNG or DICOM bytes into 8-bit grayscale; raise ImageError otherwise."""
    if not data:
        raise ImageError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"the file is larger than the {MAX_FILE_BYTES // 2**20} MB limit")
    kind = sniff_format(data)
    if kind == "DICOM":
        from core.serving.dicom import decode_dicom  # pydicom is only imported when needed

        pixels, bit_depth, tags = decode_dicom(data)
        decoded = DecodedImage(to_uint8(pixels), kind, bit_depth, private_tags=tags)
    else:
        decoded = _decode_raster(data, kind)
    if min(decoded.pixels.shape) < MIN_SIDE:
        raise ImageError(f"the image is too small ({decoded.pixels.shape[1]}x{decoded.pixels.shape[0]} pixels)")
    return decoded


def _decode_raster(data: bytes, kind: str) -> DecodedImage:
    """Digital first: a picture is the radiograph, with its own pixels, unless a camera's EXIF, a tint or
    a drawn margin (photo.tinted, photo.drawn_margin) says it holds more, or the X-ray check does not pass
    it as it is with room to spare (DIGITAL_LAYOUT_SHARE). Only then is the film or the viewport looked for
    (photo.locate); found nowhere, the picture is read as digital after all, and the checks refuse it
    with advice that fits what sent the finder there (DecodedImage.not_found)."""
    image, scale, file_format = _open_raster(data, DECODE_SIDE)
    if image.mode in DEEP_MODES:
        return DecodedImage(to_uint8(np.asarray(image, dtype=np.float64)), kind, DEEP_MODES[image.mode])
    picture = _eight_bit(image)
    digital = _as_digital(picture, kind)
    if max(picture.shape[:2]) > MAX_ELONGATION * min(picture.shape[:2]):
        return digital
    taken = _from_camera(image) or photo.tinted(picture)
    if not (taken or photo.drawn_margin(picture)):
        detector = _shipped_detector()
        if detector is not None:  # without a fitted check nothing vouches for the digital reading
            digital.xray_check = detector.check(digital.pixels)
            if digital.xray_check.passes(DIGITAL_LAYOUT_SHARE):
                return digital
    lossless = file_format in LOSSLESS_FORMATS and not _from_camera(image)
    location = photo.locate(photo.gray_of(picture), lossless)
    if location is None:
        return replace(digital, not_found="photo" if taken else "unsure")
    if min(location.size) < DECODE_SIDE:
        # A film fills only part of a photo: decode again, at the scale that gives the film itself
        # DECODE_SIDE pixels (a no-op where the file has no more), and find it there.
        film_share = min(location.size) / min(picture.shape[:2])
        image, scale, _ = _open_raster(data, round(DECODE_SIDE / film_share))
        picture = _eight_bit(image)
        location = photo.locate(photo.gray_of(picture), lossless)
        if location is None:
            return replace(_as_digital(picture, kind), not_found="photo")
    gray, colourfulness, straightened = photo.radiograph_of(picture, location, scale)
    if gray.min() == gray.max():  # one flat shape inside the outline, no film: read as it is (a drawing)
        return replace(digital, not_found="photo" if taken else "unsure")
    return DecodedImage(to_uint8(gray), kind, 8, colourfulness, straightened)


def _shipped_detector() -> XrayDetector | None:
    """The models folder's X-ray check (registry.load_detector): the same for training and screening."""
    from core.serving import registry  # registry imports core.serving.quality, which imports this module

    return registry.load_detector()


def _from_camera(image: Image.Image) -> bool:
    """A camera's make or model in the picture's EXIF: a phone photo."""
    exif = image.getexif()
    return any(tag in exif for tag in CAMERA_TAGS)


def _as_digital(picture: np.ndarray, kind: str) -> DecodedImage:
    """An 8-bit picture read as the radiograph it is."""
    gray, colourfulness = photo.as_sent(picture)
    return DecodedImage(to_uint8(gray), kind, 8, colourfulness)


def _open_raster(data: bytes, side: int) -> tuple[Image.Image, float, str]:
    """The decoded image, at no less than `side` pixels where the format can decode smaller, its
    scale (decoded pixels per pixel of the file) and the file's format (Pillow's name)."""
    try:
        image = Image.open(io.BytesIO(data))
        file_format = image.format  # a transposed copy has none
        width, height = image.size
        # The header is read; the pixels are not yet: refuse bombs here.
        if width * height > MAX_PIXELS:
            raise ImageError(f"the image is too large ({width}x{height} pixels)")
        # JPEG decodes at 1/2, 1/4 or 1/8 scale for a fraction of the time; no
        # model or check needs more than DECODE_SIDE pixels of the X-ray, and the data
        # sets' 224-pixel images are untouched, so training and serving still agree.
        image.draft(image.mode, (side, side))
        image = ImageOps.exif_transpose(image)  # phone photos carry their rotation in EXIF
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("the image is too large (decompression bomb)") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError("the image is truncated or corrupt") from exc
    return image, max(image.size) / max(width, height), file_format


def _eight_bit(image: Image.Image) -> np.ndarray:
    """An 8-bit image of any of Pillow's modes as gray or RGB pixels, transparent areas on black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas are shown on black, as a viewer would.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("L" if image.mode in ("L", "1", "LA") else "RGB"))


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Stretch intensities to the full 8-bit range.

    Every format (8-bit JPEG, 16-bit PNG, windowed DICOM) ends on the same
    scale, so the same X-ray gets the same tensor whatever file it came in.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 2:
        raise ImageError("the image has an unexpected shape")
    if not np.isfinite(pixels).all():
        raise ImageError("the image holds invalid pixel values")
    low, high = float(pixels.min()), float(pixels.max())
    if high - low < 1e-9:
        raise ImageError("the image is blank (all pixels have the same value)")
    return np.round((pixels - low) * (255.0 / (high - low))).astype(np.uint8)


def standard_frame(gray: np.ndarray, spec: PreprocessSpec) -> framing.FrameBox:
    """The part of an 8-bit grayscale image the model reads: its standard frame, else all of it."""
    if spec.frame:
        return framing.localiser(spec.frame).box(gray, spec.frame_side)
    return framing.FrameBox(0, 0, *gray.shape)


def preprocess(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The model input for an 8-bit grayscale image: (size, size, 1) float32 in [0, 1]."""
    return _to_tensor(standard_frame(gray, spec).crop(gray), spec)


def _to_tensor(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    # INTER_AREA averages pixels when shrinking, so fine texture does not alias.
    return contrast_step(cv2.resize(gray, (spec.size, spec.size), interpolation=cv2.INTER_AREA), spec)


def contrast_step(resized: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The last step of preprocessing, on the resized 8-bit frame: equalisation and CLAHE as the
    spec asks, then the (size, size, 1) float32 tensor in [0, 1]."""
    if spec.equalise:
        # The withheld period's X-rays have higher contrast; equalising before CLAHE
        # removes global grey-level differences, so CLAHE only shapes local contrast.
        resized = cv2.equalizeHist(resized)
    if spec.clahe:
        # Local contrast equalisation evens out exposure differences between
        # machines and hospital periods, the main shift between data sets.
        clip = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        resized = clip.apply(resized)
    return (resized.astype(np.float32) / 255.0)[..., np.newaxis]


@dataclass
class ModelInput:
    """An image as decoded (for checks and display) and as the model sees it."""

    decoded: DecodedImage
    tensor: np.ndarray  # (size, size, 1) float32 in [0, 1]
    frame: framing.FrameBox  # the part of the decoded image the tensor shows

    def in_image(self, heat: np.ndarray) -> np.ndarray:
        """A heat map of the tensor placed where the tensor lies in the decoded image (zero elsewhere)."""
        return self.frame.place(heat, self.decoded.pixels.shape)


def load_model_input(data: bytes, spec: PreprocessSpec) -> ModelInput:
    """Bytes to model input: the one path shared by training, screening and every analysis."""
    decoded = decode_image(data)
    box = standard_frame(decoded.pixels, spec)
    return ModelInput(decoded, _to_tensor(box.crop(decoded.pixels), spec), box)
