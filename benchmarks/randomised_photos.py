"""A second photo renderer, written apart from core.analysis.photos: domain randomisation.

The film finder's thresholds were fitted on core.analysis.photos (the photo proxy). This renderer
draws every parameter of a phone photo of a film at random over wide ranges, with its own model of
the scene, so that the finder is judged on pictures it was not tuned on (benchmarks/photos.py
--renderer randomised). Report on it; never tune a threshold on it.

The scene is a plane seen by a pinhole camera: a room, a lightbox of its own size, frame and
brightness, and the film on it (its own grey curve, rim, curl and tilt on the lightbox), with
a thumb or a clip over it. Each pixel of the photo is traced back to the plane (the inverse of
the camera's homography). Light then falls on the plane unevenly, reflects off it (glare), passes
the lens (blur, vignetting), the sensor (noise, denoising) and the phone's JPEG. A viewer
screenshot draws a randomly laid out viewer instead.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# --- Ranges every parameter is drawn from (uniform between the two values) ---
Span = tuple[float, float]
FILM_PIXELS: Span = (480, 1000)  # the film's shorter side in the photo
FILL: Span = (0.45, 0.85)  # share of the photo's width and height the film's outline spans
BORDER = 0.03  # the film's outline keeps at least this share of the photo's side from its edges
HALF_VIEW: Span = (12.0, 28.0)  # degrees: half the angle the film's height spans from the camera
# Film: transmittance of its darkest and lightest parts, the grey curve's exponent, its rim.
FILM_DARKEST: Span = (0.02, 0.12)
FILM_LIGHTEST: Span = (0.7, 0.95)
FILM_GAMMA: Span = (0.8, 1.25)
FILM_RIM: Span = (0.0, 0.012)  # of the film's height: unexposed edge, as dark as the darkest part
# Lightbox: its brightness (over 1 clips at the camera's white), tubes' banding, falloff, frame.
LIGHTBOX_LEVEL: Span = (0.7, 1.15)
LIGHTBOX_BANDING: Span = (0.0, 0.05)
LIGHTBOX_FALLOFF: Span = (0.0, 0.2)
LIGHTBOX_FRAME: Span = (0.0, 0.06)  # of the film's height
SKIN = ((0.35, 0.75), (0.22, 0.55), (0.15, 0.45))  # a thumb in room light, red, green, blue
CLIP_LEVEL: Span = (0.08, 0.4)
DEFAULT_JPEG: Span = (55, 95)
SCREENSHOT_SIZES = ((1280, 720), (1366, 768), (1440, 900), (1920, 1080), (1680, 1050))
ZOOMS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC)  # how a viewer enlarges a small image


@dataclass(frozen=True)
class Ranges:
    """What a kind of photo draws its scene from: spans, and chances of what may or may not be there.
    Angles in degrees, lengths in the film's height unless said otherwise."""

    slant: Span = (0.0, 10.0)  # the camera's tilt from square on
    roll: Span = (-6.0, 6.0)  # the film's turn in the picture
    lightbox_margin: Span = (0.02, 0.5)  # each side's lightbox beyond the film, where its edges show
    lightbox_edges_shown: float = 0.5  # chance the lightbox ends inside the picture
    film_turn: Span = (-3.0, 3.0)  # the film's turn on the lightbox
    curl: Span = (-0.006, 0.006)  # sides bowed by this much at their middle
    gradient: Span = (0.0, 0.12)  # light falling off across the picture, share at its far side
    vignetting: Span = (0.0, 0.2)  # share lost at the picture's corners
    brightening: Span = (0.0, 0.0)  # extra light over part of the film (a window), share of white
    haze: Span = (0.0, 0.05)  # room light reflected by the whole film
    glare_spots: tuple[int, int] = (0, 0)
    glare_peak: Span = (0.6, 1.8)
    glare_size: Span = (0.015, 0.06)
    blur: Span = (0.0, 0.0015)  # of the film's shorter side in pixels
    noise: Span = (0.004, 0.02)  # standard deviation at mid-grey
    denoising: Span = (0.0, 1.0)  # Gaussian sigma of the phone's noise reduction, pixels
    jpeg_quality: Span = DEFAULT_JPEG
    exposure: Span = (0.85, 1.12)
    tone: Span = (0.85, 1.15)  # the camera's tone curve exponent
    blue: Span = (0.6, 1.08)  # colour of the light left after the phone's white balance
    green: Span = (0.85, 1.03)
    occluded: float = 0.0  # chance of a thumb or a clip over a corner
    exif: float = 0.5  # chance the photo keeps its camera's EXIF (messaging apps strip it)


BASE = Ranges()
KINDS: dict[str, Ranges | str] = {
    "film on a larger lightbox at a slant": replace(BASE, slant=(10.0, 30.0), roll=(-12.0, 12.0),
                                                    lightbox_edges_shown=1.0, occluded=0.4),
    "square with a bright margin": replace(BASE, slant=(0.0, 0.3), roll=(0.0, 0.0), film_turn=(0.0, 0.0),
                                           lightbox_edges_shown=0.3, lightbox_margin=(0.08, 0.5),
                                           gradient=(0.0, 0.04), vignetting=(0.0, 0.05),
                                           exposure=(1.0, 1.25), noise=(0.002, 0.008), denoising=(0.8, 2.0)),
    "uneven light": replace(BASE, brightening=(0.12, 0.35), gradient=(0.0, 0.3), vignetting=(0.0, 0.35)),
    "glare": replace(BASE, glare_spots=(1, 3)),
    "blur": replace(BASE, blur=(0.0025, 0.007)),
    "all together": replace(BASE, slant=(0.0, 30.0), roll=(-12.0, 12.0), curl=(-0.015, 0.015),
                            brightening=(0.0, 0.3), gradient=(0.0, 0.3), vignetting=(0.0, 0.35),
                            glare_spots=(0, 2), blur=(0.0, 0.006), noise=(0.004, 0.03), jpeg_quality=(40, 95),
                            occluded=0.5, lightbox_margin=(0.02, 0.7)),
    "viewer screenshot": "screenshot",
}


@dataclass(frozen=True)
class Picture:
    """A rendered picture as its file's bytes, the film's (or viewport image's) corners in its pixels
    (top-left, top-right, bottom-right, bottom-left) and what it is: photo or screenshot."""

    data: bytes
    corners: np.ndarray
    kind: str


def render(gray: np.ndarray, name: str, seed: int) -> Picture:
    """The named kind (KINDS) of picture of an 8-bit gray X-ray, every parameter drawn from `seed`."""
    ranges = KINDS[name]
    rng = np.random.default_rng([seed, list(KINDS).index(name)])
    if ranges == "screenshot":
        return screenshot(gray, rng)
    return photograph(gray, ranges, rng)


def _draw(span: Span, rng: np.random.Generator) -> float:
    return float(rng.uniform(*span)) if span[1] > span[0] else float(span[0])


def photograph(gray: np.ndarray, ranges: Ranges, rng: np.random.Generator) -> Picture:
    """A phone photo of the X-ray printed on film, on a lightbox, each parameter drawn from `ranges`."""
    aspect = gray.shape[1] / gray.shape[0]  # the film is `aspect` wide and 1 high, centred on the origin
    homography, size = _camera(aspect, ranges, rng)
    height, width = size
    world_x, world_y = _traced(np.linalg.inv(homography), height, width)
    film_side = _film_side(homography, aspect)
    lit, film_mask = _plane(gray, aspect, film_side, world_x, world_y, ranges, rng)
    lit = lit + _reflections(world_x, world_y, film_mask, aspect, ranges, rng)
    lit = lit * _lens_falloff(height, width, ranges, rng)[..., np.newaxis]
    sigma = _draw(ranges.blur, rng) * film_side
    if sigma > 0.3:
        lit = _blurred(lit, sigma, rng)
    photo = _sensor(lit, ranges, rng)
    corners = _projected(homography, _film_corners(aspect))
    return Picture(_jpeg(photo, ranges, rng), corners, "photo")


def _film_corners(aspect: float) -> np.ndarray:
    return np.float64([[-aspect / 2, -0.5], [aspect / 2, -0.5], [aspect / 2, 0.5], [-aspect / 2, 0.5]])


def _projected(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped = np.c_[points, np.ones(len(points))] @ homography.T
    return np.float32(mapped[:, :2] / mapped[:, 2:])


def _film_side(homography: np.ndarray, aspect: float) -> float:
    """The film's shorter side in the photo, in pixels (the mean of each pair of opposite sides)."""
    corners = _projected(homography, _film_corners(aspect))
    top, right, bottom, left = np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1)
    return float(min((top + bottom) / 2, (left + right) / 2))


def _camera(aspect: float, ranges: Ranges, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """The homography from the film's plane to the photo's pixels, and the photo's (height, width):
    a pinhole camera tilted by the slant in a random direction and turned by the roll, its picture
    then sized so that the film spans FILL of it, placed at random within BORDER of its edges."""
    slant, direction, roll = np.radians([_draw(ranges.slant, rng), rng.uniform(0, 360), _draw(ranges.roll, rng)])
    axis = np.array([np.cos(direction), np.sin(direction), 0.0])
    tilt, _ = cv2.Rodrigues(axis * slant)
    turn, _ = cv2.Rodrigues(np.array([0.0, 0.0, roll]))
    rotation = turn @ tilt
    distance = 0.5 / np.tan(np.radians(_draw(HALF_VIEW, rng)))
    plane = np.c_[rotation[:, 0], rotation[:, 1], [0.0, 0.0, distance]]
    outline = _projected(plane, _film_corners(aspect)).astype(np.float64)
    spans = outline.max(axis=0) - outline.min(axis=0)
    scale = _draw(FILM_PIXELS, rng) / _film_side(plane, aspect)
    width, height = (int(np.ceil(scale * spans[i] / _draw(FILL, rng))) for i in range(2))
    room = np.array([width, height]) - scale * spans - 2 * BORDER * np.array([width, height])
    offset = BORDER * np.array([width, height]) + rng.uniform(0, 1, 2) * np.maximum(room, 0)
    place = np.array([[scale, 0, offset[0] - scale * outline[:, 0].min()],
                      [0, scale, offset[1] - scale * outline[:, 1].min()], [0, 0, 1]])
    return place @ plane, (height, width)


def _traced(inverse: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Where on the film's plane each pixel of the photo looks."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    a = inverse.astype(np.float32)
    w = a[2, 0] * columns + a[2, 1] * rows + a[2, 2]
    return (a[0, 0] * columns + a[0, 1] * rows + a[0, 2]) / w, (a[1, 0] * columns + a[1, 1] * rows + a[1, 2]) / w


def _turned(x: np.ndarray, y: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return c * x + s * y, -s * x + c * y


def _plane(gray: np.ndarray, aspect: float, film_side: float, x: np.ndarray, y: np.ndarray, ranges: Ranges,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The light leaving the plane towards the camera (RGB): the room, the lightbox, the film on it and
    whatever lies over it; and where the film is."""
    height, width = x.shape
    room = _room(height, width, rng)
    # The lightbox, turned a little from the film, its sides `margin` beyond the film's (or far
    # outside the picture), inside a frame.
    film_turn = _draw(ranges.film_turn, rng)
    bx, by = _turned(x, y, -film_turn)
    shown = rng.random() < ranges.lightbox_edges_shown
    margins = [(_draw(ranges.lightbox_margin, rng) if shown else 50.0) for _ in range(4)]
    left, right, top, bottom = -aspect / 2 - margins[0], aspect / 2 + margins[1], -0.5 - margins[2], 0.5 + margins[3]
    inside_box = (bx > left) & (bx < right) & (by > top) & (by < bottom)
    frame = _draw(LIGHTBOX_FRAME, rng)
    in_frame = ((bx > left - frame) & (bx < right + frame) & (by > top - frame) & (by < bottom + frame)
                & ~inside_box)
    across = (bx - left) / (right - left)
    down = (by - top) / (bottom - top)
    edge_distance = np.minimum(np.minimum(across, 1 - across), np.minimum(down, 1 - down)).clip(0, 0.5)
    level = _draw(LIGHTBOX_LEVEL, rng) * (1 - _draw(LIGHTBOX_FALLOFF, rng) * (1 - 2 * edge_distance) ** 2)
    level = level * (1 + _draw(LIGHTBOX_BANDING, rng) * np.cos(2 * np.pi * rng.uniform(3, 8) * down))
    light = np.float32(np.stack([level * 1.0, level * _draw(ranges.green, rng), level * _draw(ranges.blue, rng)], -1))
    scene = np.where(inside_box[..., np.newaxis], light, room)
    scene[in_frame] = rng.uniform(0.05, 0.8)
    # The film, its sides bowed by curl: each point is read where it lay before the film curled.
    bow = _draw(ranges.curl, rng)
    along_x = rng.random() < 0.5
    u, v = 2 * x / aspect, 2 * y  # -1..1 across the film
    if along_x:
        fy, fx = y - bow * (1 - np.clip(u, -1, 1) ** 2) * v * np.abs(v), x
    else:
        fx, fy = x - bow * aspect * (1 - np.clip(v, -1, 1) ** 2) * u * np.abs(u), y
    transmittance = _transmittance(gray, aspect, film_side, fx, fy, rng)
    film = transmittance >= 0
    scene = np.where(film[..., np.newaxis], np.clip(transmittance, 0, 1)[..., np.newaxis] * light, scene)
    if rng.random() < ranges.occluded:
        scene = _occluded(scene, x, y, aspect, rng)
    return scene, film


def _room(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A wall or a desk around the lightbox: a colour with a soft texture, dimmer than the lightbox."""
    colour = rng.uniform(0.08, 0.55, 3)
    texture = cv2.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.float32(colour * (1 + 0.15 * texture[..., np.newaxis])).clip(0, 1)


def _transmittance(gray: np.ndarray, aspect: float, film_side: float, x: np.ndarray, y: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """The film's transmittance where the photo looks at it; -1 off the film. An X-ray's light parts
    (bones) pass the most light; an unexposed rim, FILM_RIM deep, passes the least."""
    darkest, lightest, gamma = _draw(FILM_DARKEST, rng), _draw(FILM_LIGHTEST, rng), _draw(FILM_GAMMA, rng)
    # Read from a copy near the photo's scale, so that the X-ray's fine grain averages rather than aliases.
    side = int(np.clip(film_side / min(1.0, aspect), 64, gray.shape[0]))
    copy = cv2.resize(gray, (max(8, round(side * aspect)), side), interpolation=cv2.INTER_AREA)
    curve = darkest + (lightest - darkest) * (np.arange(256, dtype=np.float32) / 255) ** gamma
    film = curve[copy]
    rim = _draw(FILM_RIM, rng)
    if rim > 0:
        cut = max(1, round(rim * side))
        film[:cut], film[-cut:], film[:, :cut], film[:, -cut:] = darkest, darkest, darkest, darkest
    map_x = np.float32((x / aspect + 0.5) * film.shape[1] - 0.5)
    map_y = np.float32((y + 0.5) * film.shape[0] - 0.5)
    return cv2.remap(film, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)


def _occluded(scene: np.ndarray, x: np.ndarray, y: np.ndarray, aspect: float, rng: np.random.Generator) -> np.ndarray:
    """A thumb pressing the film's edge near a corner, or a bulldog clip over a corner."""
    corner = _film_corners(aspect)[rng.integers(0, 4)]
    inward = -np.sign(corner)
    if rng.random() < 0.5:
        # The thumb: a capsule from outside the film, across its edge near the corner.
        radius = rng.uniform(0.035, 0.07)
        along_x = rng.random() < 0.5
        start = corner + inward * (np.array([rng.uniform(0.05, 0.25), -0.15]) if along_x
                                   else np.array([-0.15, rng.uniform(0.05, 0.25)]))
        reach = rng.uniform(0.04, 0.14) + 0.15
        end = start + inward * (np.array([0.0, reach]) if along_x else np.array([reach, 0.0]))
        distance = _to_segment(x, y, start, end)
        covered = distance < radius
        shade = (1 - 0.5 * (distance / radius) ** 2).clip(0, 1)
        skin = np.float32([rng.uniform(*channel) for channel in SKIN])
        scene[covered] = shade[covered][:, np.newaxis] * skin
        return scene
    # The clip: a square turned 45 degrees over the corner, a metal grey with a bright edge.
    size = rng.uniform(0.05, 0.11)
    u, v = _turned(x - corner[0], y - corner[1], 45.0)
    covered = (np.abs(u) < size) & (np.abs(v) < size)
    level = _draw(CLIP_LEVEL, rng)
    scene[covered] = level * (1 + 0.6 * (np.abs(u[covered]) > 0.8 * size))[:, np.newaxis]
    return scene


def _to_segment(x: np.ndarray, y: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    direction = end - start
    t = (((x - start[0]) * direction[0] + (y - start[1]) * direction[1]) / float(direction @ direction)).clip(0, 1)
    return np.hypot(x - start[0] - t * direction[0], y - start[1] - t * direction[1])


def _reflections(x: np.ndarray, y: np.ndarray, film: np.ndarray, aspect: float, ranges: Ranges,
                 rng: np.random.Generator) -> np.ndarray:
    """Light added by the room: a haze over the film, a brightening over part of it and the plane
    around (a window's light, falling off along a random direction), and specular spots."""
    added = np.full(x.shape, _draw(ranges.haze, rng), np.float32) * film
    strength = _draw(ranges.brightening, rng)
    if strength > 0:
        # Full at one side of the film, falling smoothly to none a random share of the way across.
        angle = rng.uniform(0, 2 * np.pi)
        across = (np.cos(angle) * x / aspect + np.sin(angle) * y) + 0.5  # 0 at the lit side's edge
        reach = rng.uniform(0.3, 0.7)
        added = added + strength * np.float32(1 / (1 + np.exp((across - reach) / (0.12 * reach))))
    spots = int(rng.integers(ranges.glare_spots[0], ranges.glare_spots[1] + 1))
    for _ in range(spots):
        centre = rng.uniform(-0.4, 0.4, 2) * [aspect, 1]
        size = _draw(ranges.glare_size, rng)
        u, v = _turned(x - centre[0], y - centre[1], rng.uniform(0, 180))
        stretch = rng.uniform(1, 3)
        spot = np.exp(-(((u / (stretch * size)) ** 2 + (v / size) ** 2) ** rng.uniform(1, 2)))
        added = added + np.float32(_draw(ranges.glare_peak, rng) * spot) * film
    return added[..., np.newaxis]


def _lens_falloff(height: int, width: int, ranges: Ranges, rng: np.random.Generator) -> np.ndarray:
    """Light lost across the picture: a linear gradient in a random direction, and vignetting."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = columns / width - 0.5, rows / height - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * u + np.sin(angle) * v) / np.sqrt(0.5) + 0.5  # 0..1 across the picture
    gradient = 1 - _draw(ranges.gradient, rng) * ramp.clip(0, 1)
    radius = (u ** 2 + v ** 2) / 0.5
    return np.float32(gradient * (1 - _draw(ranges.vignetting, rng) * radius ** 1.5))


def _blurred(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Missed focus (a disc), shake (a line) or a soft lens (a Gaussian) of about `sigma` pixels."""
    shape = rng.integers(0, 3)
    if shape == 2:
        return cv2.GaussianBlur(rgb, (0, 0), sigma)
    side = 2 * int(np.ceil(2 * sigma)) + 1
    kernel = np.zeros((side, side), np.float32)
    if shape == 0:
        cv2.circle(kernel, (side // 2, side // 2), max(1, round(1.5 * sigma)), 1.0, -1)
    else:
        angle = rng.uniform(0, np.pi)
        half = 1.7 * sigma * np.array([np.cos(angle), np.sin(angle)])
        centre = np.array([side // 2, side // 2])
        cv2.line(kernel, tuple((centre - half).round().astype(int)), tuple((centre + half).round().astype(int)), 1.0)
    return cv2.filter2D(rgb, -1, kernel / kernel.sum())


def _sensor(rgb: np.ndarray, ranges: Ranges, rng: np.random.Generator) -> np.ndarray:
    """The phone's picture: exposure, noise growing with the signal, noise reduction, tone curve, 8 bits."""
    exposed = np.clip(rgb * _draw(ranges.exposure, rng), 0, 1)
    level = _draw(ranges.noise, rng)
    noise = rng.normal(0, 1, exposed.shape).astype(np.float32) * level * np.sqrt(0.2 + 1.6 * exposed)
    noisy = exposed + noise
    sigma = _draw(ranges.denoising, rng)
    if sigma > 0.3:
        noisy = cv2.GaussianBlur(noisy, (0, 0), sigma)
    toned = np.clip(noisy, 0, 1) ** (1 / _draw(ranges.tone, rng))
    return np.uint8(toned * 255 + 0.5)


def _jpeg(rgb: np.ndarray, ranges: Ranges, rng: np.random.Generator) -> bytes:
    """The phone's JPEG, with its camera's EXIF or, sent through a messaging app, without."""
    buffer = io.BytesIO()
    options = {"quality": int(_draw(ranges.jpeg_quality, rng)), "subsampling": int(rng.choice([0, 2]))}
    if rng.random() < ranges.exif:
        exif = Image.Exif()
        exif[Image.ExifTags.Base.Make], exif[Image.ExifTags.Base.Model] = "Randomised", "Camera"
        options["exif"] = exif
    Image.fromarray(rgb).save(buffer, "JPEG", **options)
    return buffer.getvalue()


# --- A viewer's screenshot, laid out at random ---

def screenshot(gray: np.ndarray, rng: np.random.Generator) -> Picture:
    """A viewer on a desktop: dark or light theme, toolbars and panels of random sizes, thumbnails of
    the study, text over the image's corners, the image fitted in its viewport. PNG, as screenshots are."""
    width, height = SCREENSHOT_SIZES[rng.integers(len(SCREENSHOT_SIZES))]
    dark = rng.random() < 0.7
    viewport = int(rng.integers(0, 50)) if dark else int(rng.integers(190, 245))
    chrome = tuple(int(c) for c in (rng.integers(20, 80, 3) if dark else rng.integers(200, 250, 3)))
    ink = (230, 230, 230) if dark else (30, 30, 30)
    canvas = Image.new("RGB", (width, height), (viewport,) * 3)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=int(rng.integers(11, 19)))
    top = int(rng.integers(24, 100))
    draw.rectangle([0, 0, width, top], fill=chrome)
    for i in range(int(rng.integers(3, 9))):
        draw.text((10 + i * int(rng.integers(70, 120)), top // 3), rng.choice(["File", "View", "Tools", "Zoom",
                                                                               "W/L", "Series", "Help", "Export"]),
                  fill=ink, font=font)
    left = int(rng.integers(0, 320))
    if left:
        draw.rectangle([0, top, left, height], fill=tuple(max(0, c - 10) for c in chrome))
        thumbs = rng.random() < 0.5
        for i in range(int(rng.integers(2, 7))):
            row = top + 12 + i * 90
            if thumbs and left > 90:
                small = Image.fromarray(cv2.resize(gray, (70, 70), interpolation=cv2.INTER_AREA)).convert("RGB")
                canvas.paste(small, (10, row))
            draw.text((90 if thumbs else 10, row + 20), f"Series {i + 1}", fill=ink, font=font)
    bottom = int(rng.integers(0, 40))
    if bottom:
        draw.rectangle([0, height - bottom, width, height], fill=chrome)
    port = (left + 4, top + 4, width - 4, height - bottom - 4)
    port_w, port_h = port[2] - port[0], port[3] - port[1]
    scale = min(port_w / gray.shape[1], port_h / gray.shape[0]) * rng.uniform(0.7, 1.0)
    shown_w, shown_h = round(gray.shape[1] * scale), round(gray.shape[0] * scale)
    x0 = port[0] + int(rng.uniform(0, 1) * (port_w - shown_w))
    y0 = port[1] + int(rng.uniform(0, 1) * (port_h - shown_h))
    # Enlarged as viewers zoom: pixel-exact (nearest), bilinear or bicubic; shrunk by averaging.
    zoom = int(rng.choice(ZOOMS)) if shown_w > gray.shape[1] else cv2.INTER_AREA
    shown = Image.fromarray(cv2.resize(gray, (shown_w, shown_h), interpolation=zoom)).convert("RGB")
    overlay = ImageDraw.Draw(shown)
    colour = tuple(int(c) for c in rng.choice([(255, 255, 255), (255, 255, 0), (0, 255, 0)]))
    for corner in range(int(rng.integers(0, 5))):
        px = 6 if corner % 2 == 0 else shown_w - 140
        py = 6 if corner < 2 else shown_h - 40
        overlay.text((px, py), f"IM-{rng.integers(1000, 9999)}\nW {rng.integers(100, 4000)} L {rng.integers(0, 2000)}",
                     fill=colour, font=font)
    canvas.paste(shown, (x0, y0))
    corners = np.float32([[x0, y0], [x0 + shown_w, y0], [x0 + shown_w, y0 + shown_h], [x0, y0 + shown_h]])
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return Picture(buffer.getvalue(), corners, "screenshot")
