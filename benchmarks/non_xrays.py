"""Generated images that are not chest X-rays: photos, documents, screenshots and noise, and
phone photos of them as a clinic would take a film's (core.analysis.photos).

Photos come from scikit-image's and scikit-learn's bundled samples (no download),
randomly cropped, rotated, flipped and often turned gray (the hard case, since
colour alone then gives nothing away); documents, screenshots and noise are drawn.
Then some are photographed: an object's photo on a lightbox or a desk, a document on a
desk, and a photo shown in another program's viewer, so that finding and straightening a
film never lets a picture of something else through.
"""
from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.analysis.photos import PHOTO, film_photo, viewer_screenshot

BUNDLED_PHOTOS = ("astronaut", "camera", "coins", "moon", "page", "text", "horse", "clock", "coffee", "chelsea",
                  "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "cat", "brick", "grass", "gravel",
                  "checkerboard", "cell", "microaneurysms", "logo", "colorwheel", "binary_blobs", "shepp_logan_phantom")
KINDS = ("photo", "document", "screenshot", "noise", "object on a lightbox", "object on a desk",
         "document on a desk", "photo in a viewer")
WORDS = ["patient", "report", "clinic", "result", "date", "name", "total", "page", "section", "figure", "table",
         "invoice", "summary", "notes"]


def _photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = []
    for name in BUNDLED_PHOTOS:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001, S112  a sample that needs a download is skipped
            continue
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.dtype != np.uint8:
            image = np.uint8(255 * (image - image.min()) / max(np.ptp(image), 1e-9))
        photos.append(image[..., :3] if image.ndim == 3 else image)
    return photos + list(load_sample_images().images)


def _photo(rng: np.random.Generator, photos: list[np.ndarray]) -> Image.Image:
    source = photos[rng.integers(len(photos))]
    height, width = source.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    h, w = max(32, int(height * scale)), max(32, int(width * scale))
    top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    image = Image.fromarray(source[top:top + h, left:left + w])
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.rotate(float(rng.uniform(-15, 15)), expand=False)
    return image.convert("L") if rng.random() < 0.6 else image.convert("RGB")


def _document(rng: np.random.Generator) -> Image.Image:
    width, height = int(rng.integers(400, 900)), int(rng.integers(500, 1100))
    paper = int(rng.integers(225, 256))
    image = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(12, 28)))
    y = int(rng.integers(20, 80))
    while y < height - 40:
        if rng.random() < 0.1:  # a table rule
            draw.line([(30, y), (width - 30, y)], fill=int(rng.integers(0, 90)), width=2)
        line = " ".join(rng.choice(WORDS, int(rng.integers(3, 12))))
        draw.text((int(rng.integers(20, 60)), y), line, fill=int(rng.integers(0, 80)), font=font)
        y += int(rng.integers(20, 45))
    return image


def _screenshot(rng: np.random.Generator) -> Image.Image:
    width, height = int(rng.integers(500, 1200)), int(rng.integers(400, 900))
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(11, 20)))
    draw.rectangle([0, 0, width, 30], fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(30, height - 40))
        x1, y1 = x0 + int(rng.integers(40, width // 2)), y0 + int(rng.integers(20, height // 3))
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                       outline=(60, 60, 60))
        draw.text((x0 + 5, y0 + 5), " ".join(rng.choice(WORDS, 3)), fill=(0, 0, 0), font=font)
    return image.convert("L") if rng.random() < 0.5 else image


def _noise(rng: np.random.Generator) -> Image.Image:
    size = int(rng.integers(128, 700))
    kind = rng.integers(4)
    if kind == 0:
        pixels = rng.integers(0, 256, (size, size))
    elif kind == 1:
        pixels = rng.normal(128, rng.uniform(10, 80), (size, size))
    elif kind == 2:
        pixels = np.where(rng.random((size, size)) < 0.5, 0, 255) * (rng.random((size, size)) < 0.3) + 128
    else:  # smooth blobs: noise blurred at a random scale
        coarse = rng.random((int(rng.integers(3, 12)),) * 2)
        pixels = np.asarray(Image.fromarray(np.uint8(coarse * 255)).resize((size, size), Image.Resampling.BICUBIC))
    image = Image.fromarray(np.uint8(np.clip(pixels, 0, 255)))
    return image.convert("RGB") if rng.random() < 0.3 else image


def generate(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """(kind, encoded file) pairs, the kinds in turn, JPEG or PNG at random."""
    rng = np.random.default_rng(seed)
    photos = _photos()

    def photographed(image: Image.Image, background: str) -> bytes:
        rendering = replace(PHOTO, background=background, light=tuple(rng.uniform(0.6, 1.0, 3)))
        return film_photo(np.asarray(image), rendering, rng).data

    makers = {"photo": lambda: _encoded(_photo(rng, photos), rng), "document": lambda: _encoded(_document(rng), rng),
              "screenshot": lambda: _encoded(_screenshot(rng), rng), "noise": lambda: _encoded(_noise(rng), rng),
              "object on a lightbox": lambda: photographed(_photo(rng, photos), "lightbox"),
              "object on a desk": lambda: photographed(_photo(rng, photos), "desk"),
              "document on a desk": lambda: photographed(_document(rng), "desk"),
              "photo in a viewer": lambda: viewer_screenshot(np.asarray(_photo(rng, photos).convert("L")), rng).data}
    return [(KINDS[i % len(KINDS)], makers[KINDS[i % len(KINDS)]]()) for i in range(count)]


def _encoded(image: Image.Image, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if rng.random() < 0.5 else "PNG")
    return buffer.getvalue()
