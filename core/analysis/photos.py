"""Photos of X-ray films and viewer screenshots, rendered from digital X-rays: the photo proxy.

Clinics that print on film photograph it with a phone against a lightbox or a
window, or take a screenshot of a viewer. No such photos of the data set exist,
so each rendering below imitates one way a picture differs from the digital
file, on top of what every phone photo has (a background around the film, a
slight perspective, sensor noise, phone JPEG). The corners of the film in the
picture are returned with it, so that finding the film can be tested, and the
same X-ray's digital file is the reference for the model's answer
(benchmarks/photos.py).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# --- What a phone photo of a film looks like ---
FILM_SIDE = 720  # the film's shorter side in the photo's pixels (a 12 MP phone photo, decoded at 1/4)
FILM_FILL = (0.62, 0.8)  # how much of each side of the photo the film takes
# A film transmits from this much (unexposed base) to this much of the light behind it.
FILM_TRANSMITTANCE = (0.05, 0.9)
KEYSTONE = 0.03  # every corner moves up to this fraction of the film's side: a hand-held phone
SENSOR_NOISE = 0.012
# A phone's noise reduction, then its JPEG, smooth a plain lightbox into patches of one exact grey (at this
# noise and quality 70, the margin finder took 5 of 8 square-on films for screenshots before it asked for
# software's one-pixel edge).
DENOISED = 0.004
PHONE_JPEG_QUALITY = 85
# Light colours as (red, green, blue) gains: a tungsten bulb or a warm lightbox tube.
WARM_LIGHT = (1.0, 0.8, 0.58)
# Glare: a lamp reflected on the film, a bright spot of this strength (1 = just saturating at its centre).
# The plain glare rendering should be screened with a warning; the strong one refused with its hint.
GLARE_STRENGTH = 0.25
STRONG_GLARE_STRENGTH = 2.0
ROOM_LIGHT = 0.9  # a print on a desk, lit from the front
# A plain lightbox, photographed square on: one even brightness, up to past the camera's white (clipped).
FLAT_LIGHTBOX = (0.85, 1.05)
SOFT_LIGHT = (0.7, 0.7, 0.7)  # a dim lightbox or a shaded window: every level lower
# Uneven light: a soft brightening (a window's light on the film) over a quarter of the film, adding this
# share of white at its centre and falling off over a quarter of the film's side: unsaturated.
UNEVEN_LIGHT = 0.25
SCREEN_SUBPIXELS = 3  # an LCD's red, green and blue stripes per displayed pixel
# A lightbox larger than the film, its own edges in the picture: it reaches this share of the film's side
# beyond each of the film's edges, in a room this dim; photographed at this slant (corners moved).
LIGHTBOX_MARGIN = 0.12
# A viewer made for the film's size is barely larger than it: the lightbox shows in a thin line round it.
NARROW_LIGHTBOX_MARGIN = 0.02
ROOM = 0.22
LARGER_LIGHTBOX_SLANT = 0.07
# What may lie over one of the film's top corners: a thumb holding it (skin in room light) or the
# lightbox's clip, which holds the film from beyond the lightbox's edge.
THUMB = (0.55, 0.4, 0.32)
CLIP = (0.18, 0.18, 0.2)
OCCLUDER_SIZE = 0.09  # of the film's shorter side


@dataclass(frozen=True)
class Rendering:
    """How one picture of a film is made. Corners move by ``keystone`` of the film's side."""

    background: str = "lightbox"  # lightbox, flat lightbox, window, desk (lit from the front) or screen (a monitor)
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)
    keystone: float = KEYSTONE
    glare: float = 0.0  # the spot's strength; 0 for none
    uneven: float = 0.0  # the brightening over a quarter of the film (UNEVEN_LIGHT); 0 for even light
    blur: float = 0.0  # Gaussian sigma in the photo's pixels: shake or missed focus
    jpeg_quality: int = PHONE_JPEG_QUALITY
    noise: float = SENSOR_NOISE
    film_side: int = FILM_SIDE
    lightbox_margin: float = 0.0  # > 0: a lightbox this much larger than the film, its edges in the picture
    occluder: str = ""  # "thumb" or "clip" over a corner of the film; "" for none


# Each rendering is the plain photo with one thing changed, so its effect can be read alone.
PHOTO = Rendering()
# A phone held exactly parallel to the film on a plain lightbox, its picture denoised and compressed.
SQUARE = replace(PHOTO, background="flat lightbox", keystone=0.0, noise=DENOISED, jpeg_quality=70)
RENDERINGS: dict[str, Rendering | str] = {
    "film on a lightbox": PHOTO,
    "warm light": replace(PHOTO, light=WARM_LIGHT),
    "strong perspective": replace(PHOTO, keystone=0.1),
    "slight glare": replace(PHOTO, glare=GLARE_STRENGTH),
    "strong glare (should be refused)": replace(PHOTO, glare=STRONG_GLARE_STRENGTH),
    "soft blur": replace(PHOTO, blur=2.5),
    "phone JPEG, small": replace(PHOTO, jpeg_quality=50, film_side=360),
    "film against a window": replace(PHOTO, background="window"),
    "uneven light": replace(PHOTO, uneven=UNEVEN_LIGHT),
    "film on a larger lightbox at a slant": replace(PHOTO, lightbox_margin=LIGHTBOX_MARGIN,
                                                    keystone=LARGER_LIGHTBOX_SLANT),
    "larger lightbox, a thumb on a corner": replace(PHOTO, lightbox_margin=LIGHTBOX_MARGIN,
                                                    keystone=LARGER_LIGHTBOX_SLANT, occluder="thumb"),
    "larger lightbox, a clip on a corner": replace(PHOTO, lightbox_margin=LIGHTBOX_MARGIN, occluder="clip"),
    "lightbox just larger, a clip": replace(PHOTO, lightbox_margin=NARROW_LIGHTBOX_MARGIN,
                                            keystone=LARGER_LIGHTBOX_SLANT, occluder="clip"),
    "square on a flat lightbox": SQUARE,
    "square on a larger lightbox": replace(SQUARE, lightbox_margin=LIGHTBOX_MARGIN),
    "square, warm light": replace(SQUARE, light=WARM_LIGHT),
    "square, soft blur": replace(SQUARE, blur=2.5),
    "square, soft light": replace(SQUARE, light=SOFT_LIGHT),
    "photo of a screen (moire)": replace(PHOTO, background="screen"),
    "viewer screenshot": "screenshot",
}


@dataclass(frozen=True)
class Picture:
    """A rendered picture as a file, and where the radiograph lies in it: corners (x, y) in the
    picture's pixels, top-left, top-right, bottom-right, bottom-left."""

    data: bytes
    corners: np.ndarray
    kind: str  # "photo" or "screenshot"


def render(gray: np.ndarray, name: str, seed: int) -> Picture:
    """The named rendering of an 8-bit grayscale X-ray."""
    rendering = RENDERINGS[name]
    rng = np.random.default_rng(seed)
    if rendering == "screenshot":
        return viewer_screenshot(gray, rng)
    return film_photo(gray, rendering, rng)


def film_photo(pixels: np.ndarray, rendering: Rendering, rng: np.random.Generator) -> Picture:
    """A phone photo of an 8-bit image printed on film and lit from behind (on a desk: a print lit
    from the front). Gray or RGB: an X-ray, or for the not-a-chest-X-ray check anything else."""
    film = _film(pixels, rendering)
    height, width = film.shape[:2]
    # What fills FILM_FILL of the picture: the film, or the lightbox around it where its edges show.
    outer = 1 + 2 * rendering.lightbox_margin
    canvas_h = round(height * outer / rng.uniform(*FILM_FILL))
    canvas_w = round(width * outer / rng.uniform(*FILM_FILL))
    light = _background(rendering.background, canvas_h, canvas_w, rng)
    corners = _placed_corners(height, width, canvas_h, canvas_w, rendering.keystone, rng)
    source = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    warp = cv2.getPerspectiveTransform(source, corners)
    if rendering.lightbox_margin:
        light = _in_room(light, warp, rendering.lightbox_margin, width, height)
    transmitted = cv2.warpPerspective(film, warp, (canvas_w, canvas_h), flags=cv2.INTER_LINEAR,
                                      borderValue=(-1.0, -1.0, -1.0, 0.0))
    if transmitted.ndim == 2:
        transmitted = transmitted[..., np.newaxis]
    inside = transmitted[..., :1] >= 0
    behind = np.float32(ROOM_LIGHT) if rendering.background == "desk" else light
    scene = np.where(inside, np.clip(transmitted, 0, 1) * behind, light)
    if rendering.background == "screen":  # a monitor lights itself: no lightbox shows through the picture
        scene = np.where(inside, _screen_moire(transmitted[..., 0], inside[..., 0], rng), light)
    scene = scene * np.float32(rendering.light)
    if rendering.occluder:
        scene = _occluded(scene, corners, rendering.occluder, rendering.lightbox_margin, rng)
    if rendering.uneven:
        scene = scene + _brightening(corners, canvas_h, canvas_w, rendering.uneven, rng)[..., np.newaxis]
    if rendering.glare:
        scene = scene + _glare_spot(corners, canvas_h, canvas_w, rendering.glare, rng)[..., np.newaxis]
    if rendering.blur:
        scene = cv2.GaussianBlur(scene, (0, 0), rendering.blur)
    scene = scene + rng.normal(0, rendering.noise, scene.shape).astype(np.float32)
    photo = np.uint8(np.clip(scene, 0, 1) * 255 + 0.5)
    return Picture(_jpeg(photo, rendering.jpeg_quality), corners, "photo")


def _film(pixels: np.ndarray, rendering: Rendering) -> np.ndarray:
    """The film's transmittance at the photo's scale: light where the X-ray is light (bones)."""
    scale = rendering.film_side / min(pixels.shape[:2])
    size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    enlarged = cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    low, high = FILM_TRANSMITTANCE
    return low + (high - low) * np.clip(enlarged, 0, 1)


def _placed_corners(height: int, width: int, canvas_h: int, canvas_w: int, keystone: float,
                    rng: np.random.Generator) -> np.ndarray:
    top, left = (canvas_h - height) / 2, (canvas_w - width) / 2
    rectangle = np.float32([[left, top], [left + width, top], [left + width, top + height], [left, top + height]])
    jitter = rng.uniform(-keystone, keystone, (4, 2)) * np.float32([width, height])
    return np.float32(rectangle + jitter)


def _background(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The light behind and around the film, RGB in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = ((y / height - 0.5) ** 2 + (x / width - 0.5) ** 2)
    if kind == "lightbox":
        # A diffuser lit by tubes: bright, a little darker towards the corners.
        level = rng.uniform(0.85, 0.97) * (1 - 0.25 * radius)
        return np.repeat(level[..., np.newaxis], 3, axis=2)
    if kind == "flat lightbox":
        return np.full((height, width, 3), rng.uniform(*FLAT_LIGHTBOX), np.float32)
    if kind == "desk":
        # Wood: a warm brown with its grain running along the desk.
        grain = 0.08 * np.sin(2 * np.pi * (y / height * rng.uniform(8, 20) + 0.3 * np.sin(x / width * 6)))
        return np.stack([0.55 + grain, 0.38 + grain, 0.22 + grain], axis=2).astype(np.float32)
    if kind == "window":
        # Sky graded from top to bottom, crossed by a dark window bar.
        sky = np.stack([0.75 + 0.1 * y / height, 0.82 + 0.08 * y / height, np.full_like(y, 0.95)], axis=2)
        bar = np.abs(x - width * rng.uniform(0.05, 0.12)) < width * 0.03
        sky[bar] = (0.25, 0.22, 0.2)
        return sky
    # A monitor: a dark bezel in a lit room.
    return np.full((height, width, 3), rng.uniform(0.55, 0.7), np.float32)


def _in_room(light: np.ndarray, warp: np.ndarray, margin: float, width: int, height: int) -> np.ndarray:
    """The lightbox cut to its own outline, `margin` of the film's side beyond the film on the film's
    plane (seen through the same perspective), in a dim room."""
    left, top, right, bottom = -margin * width, -margin * height, (1 + margin) * width, (1 + margin) * height
    box = np.float32([[[left, top], [right, top], [right, bottom], [left, bottom]]])
    outline = cv2.perspectiveTransform(box, warp)[0]
    inside = np.zeros(light.shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, outline.round().astype(np.int32), 1)
    return np.where(inside[..., np.newaxis] > 0, light, np.float32(ROOM))


def _occluded(scene: np.ndarray, corners: np.ndarray, occluder: str, margin: float,
              rng: np.random.Generator) -> np.ndarray:
    """Drawn over the film, opaque: a thumb (an ellipse reaching in over the film's edge beside a corner),
    or a lightbox's clip holding the film's top edge near a corner, from beyond the lightbox's edge."""
    index = int(rng.integers(0, 2))  # the top-left or the top-right corner
    corner, beside = corners[index], corners[1 - index]
    down = corners[3 - index] - corner  # along the film's side from that corner
    film_side = float(min(np.linalg.norm(beside - corner), np.linalg.norm(down)))
    along, into = (beside - corner) / np.linalg.norm(beside - corner), down / np.linalg.norm(down)
    at = corner + 0.15 * film_side * along
    side = OCCLUDER_SIZE * film_side
    covered = np.zeros(scene.shape[:2], np.uint8)
    if occluder == "clip":
        reach = (margin + OCCLUDER_SIZE) * film_side  # out past the lightbox's edge, where it is held
        clip = np.float32([at - side / 2 * along - reach * into, at + side / 2 * along - reach * into,
                           at + side / 2 * along + side / 2 * into, at - side / 2 * along + side / 2 * into])
        cv2.fillConvexPoly(covered, clip.round().astype(np.int32), 1)
        colour = CLIP
    else:
        angle = float(np.degrees(np.arctan2(into[1], into[0])))
        cv2.ellipse(covered, tuple(int(v) for v in at.round()), (round(side), round(side * 0.6)), angle, 0, 360, 1, -1)
        colour = THUMB
    return np.where(covered[..., np.newaxis] > 0, np.float32(colour)[:scene.shape[2]], scene)


def _screen_moire(transmitted: np.ndarray, inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The X-ray as a monitor shows it to a camera: each displayed pixel lit as red, green and blue
    stripes, sampled by the camera's coarser grid, whose beat with the stripes is the moire."""
    height, width = transmitted.shape
    # Screen subpixels per photo pixel, close to a multiple of three, and growing a little down the
    # picture (the lens): the beat bands are tilted and uneven, as in a real photo of a screen.
    pitch = rng.uniform(2.7, 3.3) * (1 + 0.03 * np.arange(height, dtype=np.float32)[:, np.newaxis] / height)
    x = np.arange(width, dtype=np.float32)[np.newaxis, :] * SCREEN_SUBPIXELS / pitch
    stripes = np.stack([np.clip(np.cos(2 * np.pi * (x - k / SCREEN_SUBPIXELS)), 0, 1) for k in range(3)], axis=2)
    stripes = 0.6 + 0.4 * stripes / stripes.mean()
    displayed = np.clip(transmitted, 0, 1)[..., np.newaxis] * stripes * 0.9
    return np.where(inside[..., np.newaxis], displayed, 0.0)


def _glare_spot(corners: np.ndarray, height: int, width: int, strength: float, rng: np.random.Generator
                ) -> np.ndarray:
    """A lamp's reflection: a soft elliptical spot somewhere on the film, larger the stronger."""
    centre = corners.mean(axis=0) + rng.uniform(-0.25, 0.25, 2) * (corners[2] - corners[0])
    radius = rng.uniform(0.04, 0.07) * min(height, width) * max(1.0, strength)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = ((x - centre[0]) / (1.6 * radius)) ** 2 + ((y - centre[1]) / radius) ** 2
    return np.float32(strength * 1.6 * np.exp(-distance))


def _brightening(corners: np.ndarray, height: int, width: int, strength: float, rng: np.random.Generator
                 ) -> np.ndarray:
    """Light falling on one quarter of the film (a window beside the lightbox): a broad soft rise, centred
    in a quarter chosen at random, of `strength` at its centre."""
    quarter = rng.integers(0, 2, 2)  # which half across and down
    centre = corners[0] + (0.25 + 0.5 * quarter) * (corners[2] - corners[0])
    spread = 0.25 * float(np.linalg.norm(corners[2] - corners[0])) / np.sqrt(2)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.float32(strength * np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * spread ** 2)))


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    _, encoded = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return encoded.tobytes()


# --- A screenshot of a viewer: toolbars, a study list and text over the image ---
VIEWER_SIZE = (1280, 800)
VIEWER_MARGINS = {"top": 56, "left": 220, "bottom": 28}


def viewer_screenshot(gray: np.ndarray, rng: np.random.Generator, light: bool = False, flush: bool = False) -> Picture:
    """A desktop viewer showing the X-ray fitted into its viewport, with overlays in its corners; a dark
    viewport, or a light theme's (brighter than most of the X-ray, as a lightbox is); centred, or flush
    with the viewport's lower right corner, 10 px from the window's edge."""
    width, height = VIEWER_SIZE
    viewport = int(rng.integers(215, 246)) if light else int(rng.integers(0, 40))
    canvas = Image.new("RGB", (width, height), (viewport,) * 3)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    draw.rectangle([0, 0, width, VIEWER_MARGINS["top"] - 8], fill=(38, 52, 78))  # toolbar
    for i, label in enumerate(("Open", "Window", "Zoom", "Measure", "Export")):
        draw.text((16 + 90 * i, 16), label, fill=(220, 225, 235), font=font)
    draw.rectangle([0, VIEWER_MARGINS["top"], VIEWER_MARGINS["left"] - 10, height], fill=(52, 55, 60))  # study list
    for i in range(8):
        draw.text((12, VIEWER_MARGINS["top"] + 14 + 28 * i), f"Study {i + 1:03d}  CR chest", fill=(200, 200, 200),
                  font=font)
    draw.rectangle([0, height - VIEWER_MARGINS["bottom"], width, height], fill=(30, 30, 34))  # status bar
    draw.text((VIEWER_MARGINS["left"], height - 22), "Ready", fill=(180, 180, 180), font=font)
    # The viewport: the image fitted inside, centred, its own pixels kept.
    port_left, port_top = VIEWER_MARGINS["left"], VIEWER_MARGINS["top"]
    port_w, port_h = width - port_left - 10, height - port_top - VIEWER_MARGINS["bottom"] - 10
    scale = min(port_w / gray.shape[1], port_h / gray.shape[0]) * rng.uniform(0.85, 1.0)
    shown_w, shown_h = round(gray.shape[1] * scale), round(gray.shape[0] * scale)
    left, top = port_left + (port_w - shown_w) // 2, port_top + (port_h - shown_h) // 2
    if flush:
        left, top = port_left + port_w - shown_w, port_top + port_h - shown_h
    shown = Image.fromarray(cv2.resize(gray, (shown_w, shown_h), interpolation=cv2.INTER_LINEAR)).convert("RGB")
    overlay = ImageDraw.Draw(shown)
    overlay.text((8, 6), "IM-0001  2026-11-30", fill=(255, 255, 255), font=font)
    overlay.text((shown_w - 120, shown_h - 22), "W 255  L 128", fill=(255, 255, 255), font=font)
    canvas.paste(shown, (left, top))
    corners = np.float32([[left, top], [left + shown_w, top], [left + shown_w, top + shown_h], [left, top + shown_h]])
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return Picture(buffer.getvalue(), corners, "screenshot")
