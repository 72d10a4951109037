"""The pictures of docs/photographing-films.md, from drawn X-rays (never a patient's):
python -m benchmarks.photo_guide. Each is a rendering of core.analysis.photos beside what the
dashboard makes of it (the straightened film, or its refusal)."""
from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.analysis.photos import PHOTO, RENDERINGS, STRONG_GLARE_STRENGTH, Picture, film_photo
from core.analysis.synthetic import chest_xray
from core.serving.imaging import ImageError
from core.serving.predictor import Predictor

OUT = Path(__file__).resolve().parents[1] / "docs" / "photo-guide"
HEIGHT = 300  # each half of a guide picture
# file name -> the rendering it shows
PICTURES = {
    "good.png": PHOTO,
    "glare.png": replace(PHOTO, glare=STRONG_GLARE_STRENGTH),
    "slant.png": RENDERINGS["strong perspective"],
    "too-far.png": replace(PHOTO, film_side=150),
    "screen.png": RENDERINGS["photo of a screen (moire)"],
    "larger-lightbox.png": RENDERINGS["larger lightbox, a thumb on a corner"],
    "uneven-light.png": RENDERINGS["uneven light"],
}


def _fitted(pixels: np.ndarray) -> Image.Image:
    image = Image.fromarray(pixels).convert("RGB")
    return image.resize((round(image.width * HEIGHT / image.height), HEIGHT))


def guide_picture(picture: Picture, predictor: Predictor) -> Image.Image:
    """The photo, and beside it the straightened film with the dashboard's warnings, or its refusal."""
    photo = _fitted(np.asarray(Image.open(io.BytesIO(picture.data)).convert("RGB")))
    try:
        screened = predictor.screen(picture.data)
        result, note = _fitted(screened.image), "screened; " + ("; ".join(screened.warnings) or "no warnings")
    except ImageError as exc:
        result, note = Image.new("RGB", (HEIGHT, HEIGHT), (60, 60, 60)), f"refused: {exc}"
    canvas = Image.new("RGB", (photo.width + result.width + 10, HEIGHT + 46), (255, 255, 255))
    canvas.paste(photo, (0, 0))
    canvas.paste(result, (photo.width + 10, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for row, start in enumerate(range(0, len(note), 90)):
        draw.text((4, HEIGHT + 6 + 16 * row), note[start:start + 90], fill=(0, 0, 0), font=font)
    return canvas


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    xray = chest_xray(3, True, 512)
    predictor = Predictor.load()
    for index, (name, rendering) in enumerate(PICTURES.items()):
        picture = film_photo(xray, rendering, np.random.default_rng(index))
        guide_picture(picture, predictor).save(OUT / name, optimize=True)
        print(OUT / name)


if __name__ == "__main__":
    main()
