"""The radiograph in a phone photo of a film or a screenshot of a viewer: found, straightened, measured.

Clinics that print X-rays on film photograph the film against a lightbox or a
window; others send a screenshot of a viewer. Both hold a radiograph inside a
larger picture, in tinted light or among toolbars. Before any check or model
sees it, the radiograph is found, cut out (a perspective transform for a photo),
its white balanced and turned grey. A digital file whose X-ray fills the
picture is passed on untouched, so the training images go through this step
unchanged and training and screening still agree: the finders only look where
cheap evidence (:func:`tinted`, :func:`drawn_margin`, a camera's EXIF, the X-ray check
not passing the picture as it is with room to spare; core.serving.imaging) says
there is more than a radiograph in the picture.

Two finders, tried in turn, both on a small copy of the picture:
1. A screenshot: software draws its margins, toolbars and text in exact flat
   greys, where an X-ray always has grain. The radiograph is the box of what
   differs from the viewport's grey around the largest grainy region.
   A margin brighter than nearly all it surrounds is a lightbox, which a phone's
   JPEG can make one exact grey, not a viewer's: a film passes no more light
   than falls on it.
2. An outline: a film's edge is the largest convex quadrilateral of strong edges
   (Canny, then the contour's hull cut to four corners, each side then fitted to
   its edge pixels), supported by edges along most of each side and with few
   edges around it. It is a photo's, square to the picture or not. A lightbox, a
   window or a sheet of paper larger than the film has such an outline too: the
   film is then the one inside it that is darker than the light along every side.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

# --- Configurable constants ---
# Cheap evidence of a photo or a screenshot, read before any finder. Chroma of the picture as sent
# (before white balance): the 5,216 training X-rays, all stored as RGB, score 0.0; films in the photo
# proxy's warm light 25 and more, against a window 12 and more, viewer screenshots 5.
TINTED = 2.0
# A line of one exact grey along the picture's edge is a margin software drew, unless it is black:
# X-ray files are padded with black (216 of the training X-rays have a black line at an edge, the 3
# that the film finder cuts among them); no training X-ray has a line of any other one grey there.
PADDING = 0
WORK_SIDE = 384  # the pictures are searched at this longer side: enough for a film's outline
# The radiograph fills at least this much of the picture, and lies at least this share of
# the side inside the picture's edges: the guide asks for all four edges of the film in view.
MIN_AREA = 0.15
EDGE_GAP = 0.015
# Screenshots, at full size: a 3x3 neighbourhood of one exact grey is flat, and flat pixels that fill a
# square FLAT_SPAN of the longer side wide are drawn, not radiographed (a camera's noise never leaves them
# so). A viewer that enlarges a small X-ray pixel-exact or bilinear draws blocks of one grey as wide as its
# zoom: a 224-pixel X-ray (the data set's) filling a 16:9 picture's height makes blocks of at most 0.26% of
# the longer side, so the span is four blocks and more. Measured on plain viewers drawn apart from both
# renderers (10 training X-rays enlarged 3 to 9 times in 1280- to 3840-pixel screenshots, nearest, bilinear
# and bicubic): flat pixels alone found 0 of 10 pixel-exact zooms at 1920 pixels and 2 of 10 bilinear;
# spans of 0.5% to 2% found all 90. Text, icons and rules narrower than TEXT_SIZE of the side are opened
# away; the viewport's grey surrounds the radiograph on STRAIGHT_SIDE of a RING around it; software drew at
# least MIN_FLAT_MARGIN of the picture around it, and MIN_DRAWN of the whole.
FLAT_SPAN = 0.01
TEXT_SIZE = 0.025
STRAIGHT_SIDE = 0.9
RING = 3
MIN_FLAT_MARGIN = 0.5
MIN_DRAWN = 0.1
# A viewer may draw the radiograph up to its window's edge: its viewport's grey must still show all round,
# VIEWPORT_GAP pixels at least (a digital X-ray reaches the picture's edges), not EDGE_GAP of the side.
VIEWPORT_GAP = RING
# A film passes no more light than falls on it: a margin, or the picture's edge, at least as bright as
# this percentile of what the margin surrounds is the lightbox behind a film (the margin then its black
# rim), however flat a phone's denoising and JPEG made it. The proxy's square-on films: 5 to 8 of 8 taken
# for screenshots without this test, none of 40 validation X-rays with it; viewer screenshots kept (their
# margins are dark). Software's one-pixel edge was tried and not kept: the box's outermost line against
# the line 4 pixels inside gave 0.83-0.91 for screenshots and at most 0.03 for films at full size, but up
# to 0.5 for films JPEG decoded at half size, and under 0.2 for 2 of 40 validation X-rays whose black
# edges lie on a viewer's black.
LIT_PERCENTILE = 95
# Photos, on the small copy. Each side of the film's quadrilateral runs along Canny edges for at
# least EDGE_SUPPORT of its length, and at most MAX_SURROUND_EDGES of the pixels around the film
# are edges (a lightbox, a window or a desk; not an X-ray's ribs and arms).
EDGE_SUPPORT = 0.6
MAX_SURROUND_EDGES = 0.03  # measured: films 0-1.2%; two digital X-rays cut to under half of them at 6%
# Around and just inside the film, bands of BAND of the side differ by MIN_STEP grey levels in
# their medians (_lit_from_behind_all_round reads the band outside as its brightest line): measured
# 55-170 for the photo proxy's films on a lightbox or window, less for some
# photographed screens (a grey bezel), 8-19 for the lungs of drawn X-rays.
BAND = 0.04
MIN_STEP = 25
# Corner-finding tolerances, shares of the outline's length, tried in turn: a window bar or a
# hand touching the film adds bumps to its outline that the looser ones cut off.
QUAD_FITS = (0.02, 0.04, 0.07)
CANDIDATES = 8  # the largest outlines tried
SIDE_ENDS = 0.2  # share of each side at either end left out where a nested film's sides are read
SIDE_SAMPLES = 32  # points along each side where the light inside and outside it is read
NESTED_TOLERANCE = 2.0  # pixels of the small copy a nested outline's corner may lie outside (sides it shares)
CANNY = (0.25, 0.5)  # Canny's thresholds, as shares of the picture's Otsu threshold
# Failing an outline, the film's sides are sought among straight edges at least MIN_SIDE_LINE of the
# picture's side long, the LINES_PER_DIRECTION longest across and down.
MIN_SIDE_LINE = 0.2
LINES_PER_DIRECTION = 10
LINE_GAP = 10  # pixels of the small copy a side's edge may be broken by
# Pieces of straight edges are one side where both ends lie within JOIN_DISTANCE pixels of the longer's
# line and at most JOIN_GAP pixels beyond its ends (a clip or a thumb over the side), on the small copy.
JOIN_DISTANCE = 2.0
JOIN_GAP = 30
JOINED_PIECES = 60  # the longest pieces joined: a film's sides are among them, an X-ray's ribs add hundreds
LINE_QUADS_CHECKED = 80  # the largest outlines of straight lines checked in full (a film inside a lightbox among them)
SPANNING = 0.95  # a straight edge spanning this share of the picture is behind the film, not its side
DARK_OPENING = 0.06  # a share of the side: a dark region narrower than this is not the film
REFINE_BAND = 0.02  # edge pixels this share of the side from a rough side give its straight line
SQUARE_TO_SCREEN = 2.0  # pixels of the small copy: corners this close to an upright rectangle's are square on
MAX_SLANT = 35  # degrees from a right angle at any corner; more is not a film seen from a phone
MAX_KEYSTONE_RATIO = 0.6  # the shorter of two opposite sides is at least this share of the longer
# The film's own rim and the lightbox's halo are cut off: this share of each side.
INSET = 0.015
# White balance: the film's grey is estimated from pixels not saturated in any channel.
SATURATED = 250
GLARE_RIM = 2  # pixels around a saturated patch filled with it
# A reflection's halo, bright but no longer saturated, reaches beyond the patch by this share of the patch's
# radius and is filled with it: left, it reads as not a radiograph's grey levels, or as an opacity. Fitted
# on the photo proxy's glare (16 validation X-rays, spots of strength 0.25, 0.5 and 1.0): the straightened
# film's mean difference from the same photo without glare, 27 grey levels with the rim alone, was least
# at this share (9-20; 0.5 and 1.5 left 9-21).
GLARE_HALO = 1.0
GLARE_FILL = 5  # pixels around a glare patch that its filling reads
DISPLAY_SIDE = 640
# Photo quality is measured on the straightened film at these sizes.
SHARPNESS_SIDE = 256
SHARPNESS_SMOOTHING = 1.0  # Gaussian sigma, pixels at SHARPNESS_SIDE
MOIRE_SIDE = 256
# Uneven light: the lightbox or window just around the film, LIGHT_BAND of the side deep, in LIGHT_SECTORS
# sectors round the film's centre; the brightest sector's median over the median sector's, less one, read
# on a copy of LIGHT_SIDE pixels. Only a brightening counts: a window bar or a hand beside the film darkens
# a sector or two, which leaves the median sector where it was.
LIGHT_BAND = 0.03
LIGHT_SECTORS = 12
LIGHT_SIDE = 384
# core.serving.photo.uneven_light, on 40 validation X-rays each (benchmarks/photos.py): films on a lightbox
# 0-0.031, against a window (its sky graded) 0.030-0.076, the proxy's uneven light 0.071-0.172 (9 in 10
# over 0.087); benchmarks.photos --count 40 then flags 88% of uneven light and 1 of 40 window photos.
# Above it the light is flattened (and warned, core.serving.quality): its excess in the band, spread over
# the film by harmonic interpolation on a grid LIGHT_GRID cells a side (LIGHT_SPREAD_STEPS Jacobi steps),
# is taken off. On the proxy's uneven light (benchmarks/uneven_light.py, 100 validation X-rays) normal
# X-rays then moved 0.023 from their digital files' scores against 0.033 warned only, and kept a
# specificity of 0.857 against 0.750 (digital files 0.905); even light is never flattened.
UNEVEN_LIGHT = 0.08
LIGHT_GRID = 48
LIGHT_SPREAD_STEPS = 400
# Chroma is judged on a view this small, a sixteenth of the picture a pixel: the colour of
# regions (a face, a document, a screen's UI), not the colour bands of a photographed
# screen's moire or JPEG's fringes. Measured (benchmarks/photos.py): photos of a screen
# scored up to 30 on a 16-pixel view and under 4 on this one; colour photos lost little.
CHROMA_SIDE = 4


@dataclass(frozen=True)
class Location:
    """Where the radiograph lies in a picture: corners (x, y) in its pixels, top-left,
    top-right, bottom-right, bottom-left; ``kind`` photo or screenshot."""

    kind: str
    corners: np.ndarray

    @property
    def keystone(self) -> float:
        """The longer over the shorter of each pair of opposite sides, the larger: 1 for a
        photo taken square to the film, more the more the phone was tilted."""
        top, right, bottom, left = _side_lengths(self.corners)
        return float(max(max(top, bottom) / max(min(top, bottom), 1), max(left, right) / max(min(left, right), 1)))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the straightened radiograph, in the picture's pixels."""
        top, right, bottom, left = _side_lengths(self.corners)
        return max(1, round((top + bottom) / 2)), max(1, round((left + right) / 2))


def _side_lengths(corners: np.ndarray) -> tuple[float, ...]:
    return tuple(float(np.linalg.norm(corners[(i + 1) % 4] - corners[i])) for i in range(4))


def gray_of(picture: np.ndarray) -> np.ndarray:
    """An 8-bit gray or RGB picture's luminance, as the finders read it."""
    return picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)


def tinted(picture: np.ndarray) -> bool:
    """Cheap evidence of a photo in an 8-bit gray or RGB picture: a tint (a film in coloured light or
    against a window; a viewer's colours too)."""
    return picture.ndim == 3 and colourfulness(picture) > TINTED


def drawn_margin(picture: np.ndarray) -> bool:
    """Cheap evidence of more than a radiograph in an 8-bit gray or RGB picture: an edge line of one exact
    grey, as software draws (or a plain lightbox that a phone's JPEG made exact)."""
    gray = gray_of(picture)
    return any(line.min() == line.max() > PADDING for line in (gray[0], gray[-1], gray[:, 0], gray[:, -1]))


def locate(gray: np.ndarray, lossless: bool = False) -> Location | None:
    """The radiograph inside a screenshot or a photo (8-bit gray), or None when the picture is the radiograph.

    lossless: the file keeps every pixel as made (PNG). A margin of exactly one grey is then software's:
    a camera's noise is only made exactly flat by a lossy JPEG, so a bright one is no lightbox behind a
    film, as it may be in a JPEG (a light-theme viewer's, there)."""
    corners = _viewport(gray, lossless)
    if corners is not None:
        return Location("screenshot", corners)
    scale = min(1.0, WORK_SIDE / max(gray.shape))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    outline = _film_outline(small)
    return None if outline is None else Location("photo", np.float32(outline / scale))


def _axis_aligned(corners: np.ndarray) -> bool:
    (left, top), (right, _), (_, bottom), _ = corners
    rectangle = np.float32([[left, top], [right, top], [right, bottom], [left, bottom]])
    return bool(np.abs(corners - rectangle).max() <= SQUARE_TO_SCREEN)


def _inside_margin(box_area: float, corners: np.ndarray, shape: tuple[int, int], gap: float | None = None) -> bool:
    """Large enough to be the radiograph, and with the picture around it on every side: a
    digital X-ray, which reaches the picture's edges, is never cut (nor a body's outline in it)."""
    return box_area >= MIN_AREA * shape[0] * shape[1] and _within(corners, shape, gap)


def _within(corners: np.ndarray, shape: tuple[int, int], gap: float | None = None) -> bool:
    """Inside the picture by `gap` pixels on every side, or by EDGE_GAP of its sides."""
    height, width = shape
    gap_x, gap_y = (gap, gap) if gap is not None else (EDGE_GAP * width, EDGE_GAP * height)
    xs, ys = corners[:, 0], corners[:, 1]
    return bool(xs.min() >= gap_x and ys.min() >= gap_y and xs.max() <= width - gap_x and ys.max() <= height - gap_y)


def _square_enough(corners: np.ndarray) -> bool:
    """A rectangle seen at a slant: every corner's angle within MAX_SLANT of a right angle, and
    opposite sides of like length."""
    top, right, bottom, left = _side_lengths(corners)
    if min(top, bottom) < MAX_KEYSTONE_RATIO * max(top, bottom) or min(left, right) < MAX_KEYSTONE_RATIO * max(left, right):
        return False
    for i in range(4):
        before, after = corners[i - 1] - corners[i], corners[(i + 1) % 4] - corners[i]
        cosine = float(before @ after) / max(float(np.linalg.norm(before) * np.linalg.norm(after)), 1e-9)
        if abs(cosine) > np.sin(np.radians(MAX_SLANT)):
            return False
    return True


def _viewport(gray: np.ndarray, lossless: bool) -> np.ndarray | None:
    """A screenshot's radiograph, at full size: software draws its margins in exactly one grey
    around the viewport, so the radiograph is the box of what differs from that grey there."""
    kernel3 = np.ones((3, 3), np.uint8)
    flat = np.uint8((cv2.dilate(gray, kernel3) == cv2.erode(gray, kernel3)) & (gray < SATURATED))
    # Flat pixels that fill a square FLAT_SPAN wide: a margin up to its edge, not a zoom's blocks.
    span = np.ones((max(3, round(FLAT_SPAN * max(gray.shape))),) * 2, np.uint8)
    drawn = cv2.morphologyEx(flat, cv2.MORPH_OPEN, span) > 0
    if drawn.mean() < MIN_DRAWN:
        return None
    # The largest undrawn region, once text, icons and rules are opened away, is inside the viewport.
    side = max(3, round(TEXT_SIZE * max(gray.shape)))
    opened = cv2.morphologyEx(np.uint8(~drawn), cv2.MORPH_OPEN, np.ones((side, side), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=4)
    if count < 2:
        return None
    left, top, width, height = (int(v) for v in stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4])
    ring = _ring(gray, left, top, left + width, top + height)
    if ring.size == 0:
        return None
    viewport = int(np.bincount(ring).argmax())
    # All that differs from the viewport's grey and joins that region: the radiograph, with its
    # text overlays and any flat patches inside it.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(np.uint8(gray != viewport), connectivity=8)
    inside = labels[top:top + height, left:left + width]
    inside = inside[inside > 0]
    if inside.size == 0:
        return None
    left, top, width, height = (int(v) for v in stats[int(np.bincount(inside).argmax()), :4])
    corners = np.float32([[left, top], [left + width, top], [left + width, top + height], [left, top + height]])
    if not _inside_margin(width * height, corners, gray.shape, VIEWPORT_GAP):
        return None
    # The viewport's grey must surround the box (a drawn rectangle, not an outline inside an X-ray),
    # and software must have drawn most of the picture around it.
    if np.mean(_ring(gray, left, top, left + width, top + height) == viewport) < STRAIGHT_SIDE:
        return None
    outside = np.ones(gray.shape, bool)
    outside[top:top + height, left:left + width] = False
    if drawn[outside].mean() < MIN_FLAT_MARGIN:
        return None
    if lossless:
        return corners
    return None if _lit_from_behind(gray, gray[top:top + height, left:left + width], viewport) else corners


def _lit_from_behind(gray: np.ndarray, box: np.ndarray, viewport: int) -> bool:
    """The margin, or the picture's edge around it, is as bright as nearly all of the box: the light
    behind a film (the margin may be the film's own black rim), not a viewer's."""
    edge = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return max(viewport, float(np.median(edge))) >= np.percentile(box, LIT_PERCENTILE)


def _ring(gray: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """The pixels just outside a box, RING pixels deep, where the picture has them."""
    y0, x0 = max(0, top - RING), max(0, left - RING)
    y1, x1 = min(gray.shape[0], bottom + RING), min(gray.shape[1], right + RING)
    around = np.ones((y1 - y0, x1 - x0), bool)
    around[top - y0:bottom - y0, left - x0:right - x0] = False
    return gray[y0:y1, x0:x1][around]


def _film_outline(small: np.ndarray) -> np.ndarray | None:
    """A photo's film: the largest convex quadrilateral of strong edges, supported along each side, with
    few edges around it. A photo even when square to the picture: only software's flat margins
    (_viewport) make a screenshot, never an outline a camera may have seen square on."""
    blurred = cv2.GaussianBlur(small, (5, 5), 0)
    high, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    edges = cv2.Canny(blurred, CANNY[0] * high, CANNY[1] * high)
    lines = _straight_lines(edges)
    # Lines that span the picture are behind the film (a window's bar, a door frame): a film lies
    # inside the picture with a margin, so none of its sides spans it.
    spans = np.maximum(np.abs(lines[:, 2] - lines[:, 0]) / small.shape[1],
                       np.abs(lines[:, 3] - lines[:, 1]) / small.shape[0])
    for x0, y0, x1, y1 in lines[spans >= SPANNING].astype(int):
        cv2.line(edges, (x0, y0), (x1, y1), 0, 3)
    # Inner outlines too: a hand touching the film joins its outline from outside, and then only
    # the outline's inner side is the film's.
    contours, _ = cv2.findContours(cv2.dilate(edges, np.ones((3, 3), np.uint8)), cv2.RETR_LIST,
                                   cv2.CHAIN_APPROX_SIMPLE)
    hulls = sorted((cv2.convexHull(contour) for contour in contours), key=cv2.contourArea, reverse=True)
    # Straight lines last: two sides and where a third meets the fourth make a film's outline too.
    # A film on a larger lightbox may be found only by its lines (a clip joins its outline to the
    # lightbox's), the lightbox by its outline: the innermost film is sought among both.
    outlines = list(_quadrilaterals(hulls[:CANDIDATES] + _dark_region(blurred), edges, small))
    outlines += list(_from_lines(lines[spans < SPANNING], edges, small))
    if outlines and not _lit_from_behind_all_round(outlines[0], small):
        # The largest outline is a lightbox's (or mixes its sides with the film's): a clip or a thumb
        # reaching over the film from beyond the lightbox joins their outlines, so the film is also
        # sought as the dark region inside the lightbox alone.
        outlines += list(_quadrilaterals(_dark_region(blurred, outlines[0]), edges, small))
    return _innermost(outlines, small)


def _straight_lines(edges: np.ndarray) -> np.ndarray:
    """Straight edges at least MIN_SIDE_LINE of the picture's side long, as rows of x0, y0, x1, y1: pieces
    half as long, joined where they lie on one line (a side a little off the picture's axes steps between
    rows of pixels, which breaks it into pieces; a clip or a thumb over it breaks it too)."""
    length = round(MIN_SIDE_LINE * max(edges.shape))
    found = cv2.HoughLinesP(edges, 1, np.pi / 360, threshold=length // 4, minLineLength=length // 2,
                            maxLineGap=LINE_GAP)
    if found is None:
        return np.zeros((0, 4))
    pieces = found.reshape(-1, 4).astype(np.float64)
    pieces = pieces[np.argsort(-np.hypot(pieces[:, 2] - pieces[:, 0], pieces[:, 3] - pieces[:, 1]))][:JOINED_PIECES]
    joined = pieces[:1]
    for piece in pieces[1:]:
        on_line = np.flatnonzero(_on_one_line(joined, piece))
        if len(on_line):
            joined[on_line[0]] = _spanned(joined[on_line[0]], piece)
        else:
            joined = np.vstack([joined, piece])
    return joined[np.hypot(joined[:, 2] - joined[:, 0], joined[:, 3] - joined[:, 1]) >= length]


def _on_one_line(lines: np.ndarray, piece: np.ndarray) -> np.ndarray:
    """For each line, whether both ends of `piece` lie within JOIN_DISTANCE pixels of its straight line,
    at most JOIN_GAP pixels beyond its ends along it."""
    starts, ends = lines[:, :2], lines[:, 2:]
    reach = np.linalg.norm(ends - starts, axis=1)
    direction = (ends - starts) / np.maximum(reach, 1e-9)[:, np.newaxis]
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    offsets = piece.reshape(1, 2, 2) - starts[:, np.newaxis, :]  # (lines, both ends, x and y)
    along = np.einsum("lek,lk->le", offsets, direction)
    across = np.abs(np.einsum("lek,lk->le", offsets, normal))
    return (across.max(axis=1) <= JOIN_DISTANCE) & (along.min(axis=1) <= reach + JOIN_GAP) & (along.max(axis=1) >= -JOIN_GAP)


def _spanned(line: np.ndarray, piece: np.ndarray) -> np.ndarray:
    """The segment of `line`'s straight line spanning both."""
    start, end = line[:2], line[2:]
    direction = (end - start) / max(float(np.linalg.norm(end - start)), 1e-9)
    along = (np.r_[line, piece].reshape(4, 2) - start) @ direction
    return np.r_[start + along.min() * direction, start + along.max() * direction]


def _from_lines(lines: np.ndarray, edges: np.ndarray, small: np.ndarray) -> Iterator[np.ndarray]:
    """The film outlines that two near-horizontal and two near-vertical straight edges make, the largest
    first: for a film whose side runs along something behind it (a window's bar) or under a clip, which
    merges their outlines."""
    lengths = np.hypot(lines[:, 2] - lines[:, 0], lines[:, 3] - lines[:, 1])
    angles = np.degrees(np.arctan2(np.abs(lines[:, 3] - lines[:, 1]), np.abs(lines[:, 2] - lines[:, 0])))
    longest = np.argsort(-lengths)
    # The longest lines each way, across ones sorted top to bottom and down ones left to right, so
    # that a pair of each gives the corners in order.
    across = [i for i in longest if angles[i] < MAX_SLANT][:LINES_PER_DIRECTION]
    down = [i for i in longest if angles[i] > 90 - MAX_SLANT][:LINES_PER_DIRECTION]
    across = lines[sorted(across, key=lambda i: lines[i, 1] + lines[i, 3])]
    down = lines[sorted(down, key=lambda i: lines[i, 0] + lines[i, 2])]
    if len(across) < 2 or len(down) < 2:
        return
    corners = _crossings(across, down)  # (across, down, 2)
    pairs_across = np.array(list(itertools.combinations(range(len(across)), 2)))
    pairs_down = np.array(list(itertools.combinations(range(len(down)), 2)))
    top, bottom = np.repeat(pairs_across, len(pairs_down), axis=0).T
    left, right = np.tile(pairs_down, (len(pairs_across), 1)).T
    quads = np.stack([corners[top, left], corners[top, right], corners[bottom, right], corners[bottom, left]], axis=1)
    x, y = quads[..., 0], quads[..., 1]
    areas = 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
    height, width = small.shape
    gap_x, gap_y = EDGE_GAP * width, EDGE_GAP * height
    plausible = (np.isfinite(areas) & (areas >= MIN_AREA * height * width) & (x.min(axis=1) >= gap_x)
                 & (y.min(axis=1) >= gap_y) & (x.max(axis=1) <= width - gap_x) & (y.max(axis=1) <= height - gap_y))
    support = cv2.dilate(edges, np.ones((5, 5), np.uint8)) > 0
    for index in np.flatnonzero(plausible)[np.argsort(-areas[plausible])][:LINE_QUADS_CHECKED]:
        quad = np.float32(quads[index])
        if (_square_enough(quad) and not _axis_aligned(quad) and _edge_support(quad, support)
                and _plain_surround(quad, edges) and _stands_out(quad, small)):
            yield quad


def _crossings(across: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Where each line across meets each line down (segments as x0, y0, x1, y1): (across, down, 2),
    infinite where they are parallel."""
    def homogeneous(segments):
        ones = np.ones(len(segments))
        return np.cross(np.stack([segments[:, 0], segments[:, 1], ones], 1), np.stack([segments[:, 2], segments[:, 3], ones], 1))

    meets = np.cross(homogeneous(across)[:, np.newaxis, :], homogeneous(down)[np.newaxis, :, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return meets[..., :2] / meets[..., 2:]


def _dark_region(blurred: np.ndarray, inside: np.ndarray | None = None) -> list[np.ndarray]:
    """The hull of the dark regions away from the picture's edges, once thin things are opened away:
    a film lit from behind is darker than the light around it, and a window bar or a hand touching
    it is narrower than it (a body as bright as the light splits the film into parts).
    inside: an outline (a lightbox's) that the regions must lie inside, all outside it left out: the
    room beyond a lightbox is dark too, and a clip reaching from it joins it to the film."""
    region = blurred
    if inside is not None:
        within = np.zeros(blurred.shape, np.uint8)
        cv2.fillConvexPoly(within, inside.round().astype(np.int32), 1)
        within = cv2.erode(within, np.ones((5, 5), np.uint8)) > 0  # clear of the lightbox's own edge
        if not within.any():
            return []
        region = np.where(within, blurred, np.percentile(blurred[within], 99)).astype(np.uint8)
    _, dark = cv2.threshold(region, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    side = max(3, round(DARK_OPENING * max(blurred.shape)))
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side)))
    regions, _ = cv2.findContours(dark, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    inner = [region for region in regions if _within(region.reshape(-1, 2).astype(np.float32), blurred.shape)]
    return [cv2.convexHull(np.concatenate(inner))] if inner else []


def _innermost(outlines: list[np.ndarray], small: np.ndarray) -> np.ndarray | None:
    """Of the film outlines found (from the largest hulls first), the first, or the film inside it: a
    lightbox, a window or a sheet of paper larger than the film has an outline of its own around the
    film's. Unless the first is a film itself (darker than the light just outside it along every side), the
    film is the largest smaller outline lying within it that is dark against its light (an outline mixing the
    film's sides with the lightbox's has a side with the lightbox inside); a film on a lightbox made for its
    size lies a pixel or two inside the lightbox's outline."""
    if not outlines:
        return None
    first = outlines[0]
    if _lit_from_behind_all_round(first, small):  # a film already: what lies inside it is its anatomy
        return first
    inner = [o for o in outlines[1:] if cv2.contourArea(o) < cv2.contourArea(first)
             and _lies_within(o, first) and _lit_from_behind_all_round(o, small)]
    # The largest: an outline inside the film (its anatomy, some lit all round too) is smaller than it.
    return max(inner, key=cv2.contourArea, default=first)


def _lit_from_behind_all_round(corners: np.ndarray, small: np.ndarray) -> bool:
    """Along each side, away from the corners (a thumb or a clip), the band just inside is darker by
    MIN_STEP than the light just outside: the brightest line of the band outside, at any depth, since a
    lightbox made for the film's size shows only a thin line of light round it, its frame beyond."""
    depth = max(3, round(BAND * max(small.shape)))
    height, width = small.shape
    centre = corners.mean(axis=0)
    along = np.linspace(SIDE_ENDS, 1 - SIDE_ENDS, SIDE_SAMPLES)[:, np.newaxis]
    for i in range(4):
        start, end = corners[i], corners[(i + 1) % 4]
        normal = np.float32([start[1] - end[1], end[0] - start[0]])
        normal /= max(float(np.linalg.norm(normal)), 1e-9)
        if normal @ (centre - start) < 0:
            normal = -normal  # pointing into the film
        on_side = start + along * (end - start)
        levels = {}
        for direction in (1, -1):  # inside, then outside
            rows = []
            for step in range(1, depth + 1):
                points = (on_side + direction * step * normal).round().astype(int)
                seen = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
                if 2 * seen.sum() >= SIDE_SAMPLES:  # a row mostly off the picture is not read (one noisy pixel)
                    rows.append(small[points[seen, 1], points[seen, 0]])
            if not rows:
                return False
            levels[direction] = (float(np.median(np.concatenate(rows))) if direction == 1
                                 else max(float(np.median(row)) for row in rows))
        if levels[1] - levels[-1] > -MIN_STEP:
            return False
    return True


def _lies_within(inner: np.ndarray, outer: np.ndarray) -> bool:
    """Every corner of `inner` inside `outer`, or within NESTED_TOLERANCE pixels of its sides."""
    polygon = outer.reshape(-1, 1, 2).astype(np.float32)
    return all(cv2.pointPolygonTest(polygon, (float(x), float(y)), True) >= -NESTED_TOLERANCE for x, y in inner)


def _quadrilaterals(hulls: list[np.ndarray], edges: np.ndarray, small: np.ndarray) -> Iterator[np.ndarray]:
    """Each hull's film outline in the small picture, where it has one (the largest hulls first)."""
    shape = small.shape
    support = cv2.dilate(edges, np.ones((5, 5), np.uint8)) > 0
    for hull in hulls:
        for fit in QUAD_FITS:
            quad = cv2.approxPolyDP(hull, fit * cv2.arcLength(hull, True), True)
            if len(quad) == 4:
                break
        if len(quad) != 4 or not cv2.isContourConvex(quad):
            continue
        rough = order_corners(quad.reshape(4, 2).astype(np.float32))
        if not (_inside_margin(cv2.contourArea(rough), rough, shape) and _square_enough(rough)):
            continue
        # The sides fitted to their edges where they hold; else the hull's corners (a parallel edge
        # near a side, such as a window bar, pulls its fitted line away).
        for corners in (_refined(rough, edges), rough):
            if (corners is not None and _inside_margin(cv2.contourArea(corners), corners, shape)
                    and _square_enough(corners) and _edge_support(corners, support)
                    and _plain_surround(corners, edges) and _stands_out(corners, small)):
                yield corners
                break


def _refined(corners: np.ndarray, edges: np.ndarray) -> np.ndarray | None:
    """Each side moved onto the straight line through the edge pixels near it, the corners where
    those lines meet: a hull's corners follow the outline's bumps, a film's sides are straight."""
    rows, columns = np.nonzero(edges)
    points = np.float32(np.stack([columns, rows], axis=1))
    band = REFINE_BAND * max(edges.shape)
    lines = []
    for i in range(4):
        start, end = corners[i], corners[(i + 1) % 4]
        direction = (end - start) / max(float(np.linalg.norm(end - start)), 1e-9)
        offset = points - start
        along = offset @ direction
        across = np.abs(offset @ np.float32([-direction[1], direction[0]]))
        near = points[(across <= band) & (along > 0) & (along < float(np.linalg.norm(end - start)))]
        if len(near) < 10:
            return None
        vx, vy, x0, y0 = cv2.fitLine(near, cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append(np.cross([x0, y0, 1.0], [x0 + vx, y0 + vy, 1.0]))  # the line in homogeneous form
    meets = [np.cross(lines[i - 1], lines[i]) for i in range(4)]
    if any(abs(meet[2]) < 1e-9 for meet in meets):
        return None
    return np.float32([meet[:2] / meet[2] for meet in meets])


def _stands_out(corners: np.ndarray, small: np.ndarray) -> bool:
    """A film against a lightbox, a window or a desk differs in brightness from what is around it,
    across its whole edge; an outline inside an X-ray (the lungs) has more of the body around it."""
    quad = np.zeros(small.shape, np.uint8)
    cv2.fillConvexPoly(quad, corners.round().astype(np.int32), 1)
    band = np.ones((max(3, round(BAND * max(small.shape))),) * 2, np.uint8)
    outer, inner = cv2.dilate(quad, band) > quad, cv2.erode(quad, band) < quad
    return bool(abs(float(np.median(small[outer])) - float(np.median(small[inner]))) >= MIN_STEP)


def _plain_surround(corners: np.ndarray, edges: np.ndarray) -> bool:
    """Around a film lies a lightbox, a window or a desk, with few edges; around an outline found
    inside an X-ray lie ribs, arms and shoulders."""
    outside = np.ones(edges.shape, np.uint8)
    cv2.fillConvexPoly(outside, cv2.convexHull(corners).astype(np.int32), 0)
    outside = cv2.erode(outside, np.ones((7, 7), np.uint8)) > 0  # clear of the film's own edge
    return bool(outside.any() and (edges[outside] > 0).mean() <= MAX_SURROUND_EDGES)


def _edge_support(corners: np.ndarray, support: np.ndarray) -> bool:
    for i in range(4):
        start, end = corners[i], corners[(i + 1) % 4]
        points = start + np.linspace(0.05, 0.95, 40)[:, np.newaxis] * (end - start)
        columns = np.clip(points[:, 0].round().astype(int), 0, support.shape[1] - 1)
        rows = np.clip(points[:, 1].round().astype(int), 0, support.shape[0] - 1)
        if support[rows, columns].mean() < EDGE_SUPPORT:
            return False
    return True


def order_corners(points: np.ndarray) -> np.ndarray:
    """Four (x, y) points as top-left, top-right, bottom-right, bottom-left."""
    total, difference = points.sum(axis=1), points[:, 0] - points[:, 1]
    return np.float32([points[np.argmin(total)], points[np.argmax(difference)], points[np.argmax(total)],
                       points[np.argmin(difference)]])


def straighten(pixels: np.ndarray, location: Location) -> np.ndarray:
    """The radiograph (gray or RGB) cut out and, for a photo, warped square to the viewer, its rim cut off."""
    if location.kind == "screenshot":
        (left, top), (right, bottom) = location.corners[0].round().astype(int), location.corners[2].round().astype(int)
        return pixels[top:bottom, left:right]
    width, height = location.size
    inset_x, inset_y = INSET * width, INSET * height
    target = np.float32([[-inset_x, -inset_y], [width + inset_x, -inset_y], [width + inset_x, height + inset_y],
                         [-inset_x, height + inset_y]])
    warp = cv2.getPerspectiveTransform(location.corners, target)
    return cv2.warpPerspective(pixels, warp, (width, height), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def white_balanced(rgb: np.ndarray, across: bool = False) -> np.ndarray:
    """Grey-world balance: each channel scaled so that its mean over unsaturated pixels is their grey.
    A film is grey, so under tinted light the balanced film is grey again; a colour image is not.
    across: the means fitted as planes over the picture, so that light whose colour changes across a film
    (a window's daylight over a tinted lightbox) is balanced region by region; a colour image's regions
    differ in colour far more than a plane can take off."""
    pixels = rgb.astype(np.float32)
    usable = (rgb < SATURATED).all(axis=2)
    if usable.mean() < 0.05:
        return rgb
    if across:
        height, width = usable.shape
        rows, columns = np.mgrid[0:height, 0:width]
        plane = np.stack([np.ones((height, width)), columns / width - 0.5, rows / height - 0.5], axis=-1)
        fitted, *_ = np.linalg.lstsq(plane[usable], pixels[usable].astype(np.float64), rcond=None)
        means = np.float32(plane @ fitted)
    else:
        means = pixels[usable].mean(axis=0)
    gains = means.mean(axis=-1, keepdims=True) / np.maximum(means, 1.0)
    return np.uint8(np.clip(pixels * gains, 0, 255) + 0.5)


def colourfulness(rgb: np.ndarray) -> float:
    """Mean chroma (Hasler & Suesstrunk 2003) of the picture's regions: zero for grey, 15 and
    more for a colour photo."""
    red_green, yellow_blue = _opponent_colours(rgb, CHROMA_SIDE)
    return float(np.hypot(red_green.std(), yellow_blue.std()) + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))


def _opponent_colours(rgb: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Red-green and yellow-blue of the picture shrunk so that its shorter side is `side` pixels."""
    scale = side / min(rgb.shape[:2])
    view = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    view = view.astype(np.float64)
    return view[..., 0] - view[..., 1], 0.5 * (view[..., 0] + view[..., 1]) - view[..., 2]


@dataclass(frozen=True)
class PhotoQuality:
    """What a phone photo of a film loses, each measured on the straightened film."""

    glare: float  # share of the film saturated in every channel: a reflection, no radiograph left there
    sharpness: float  # core.serving.photo.sharpness: falls with blur and shake
    moire: float  # fine colour fringes (core.serving.photo.moire): a photographed screen's subpixels
    film_pixels: int  # the film's shorter side in the photo as taken
    keystone: float  # Location.keystone
    uneven_light: float = 0.0  # core.serving.photo.uneven_light: a brightening on part of the film


@dataclass
class Straightened:
    """A photo or screenshot's radiograph: where it was, the picture as sent (for display, never
    stored), and for a photo how it was taken."""

    location: Location
    picture: np.ndarray = field(repr=False)
    quality: PhotoQuality | None = None

    @property
    def kind(self) -> str:
        return self.location.kind


def as_sent(picture: np.ndarray) -> tuple[np.ndarray, float]:
    """A picture that is the radiograph (8-bit gray or RGB): its grey levels, white-balanced when in
    colour, and its chroma after white balance. A digital file keeps its own grey levels."""
    if picture.ndim == 2:
        return picture, 0.0
    balanced = white_balanced(picture)
    return cv2.cvtColor(balanced, cv2.COLOR_RGB2GRAY), colourfulness(balanced)


def radiograph_of(picture: np.ndarray, location: Location,
                  scale: float = 1.0) -> tuple[np.ndarray, float, Straightened]:
    """The grey radiograph found at `location` in an 8-bit gray or RGB picture, its chroma after white
    balance, and where it was. scale: decoded pixels per pixel of the file (JPEG decodes large photos
    at a fraction of their size)."""
    cut = straighten(picture, location)
    glared = cut >= SATURATED if cut.ndim == 2 else (cut >= SATURATED).all(axis=2)
    light = uneven_light(gray_of(picture), location.corners) if location.kind == "photo" else 0.0
    if light > UNEVEN_LIGHT:
        cut = flattened(cut, picture, location)
    chroma, fringes = 0.0, 0.0
    if cut.ndim == 3:
        cut = white_balanced(cut, across=True)
        chroma, fringes = colourfulness(cut), moire(cut)
        # The channels' plain mean: a photographed screen's red, green and blue stripes add up to
        # an even grey, where the usual luminance weights leave them as bands.
        cut = np.uint8(cut.mean(axis=2) + 0.5)
    glare = float(glared.mean())
    if location.kind == "photo" and glare > 0:
        # A reflection leaves no radiograph under it: fill it from around, so that neither the checks
        # nor the model read a white blot as an opacity. Too much of it is refused (core.serving.quality).
        cut = glare_filled(cut, glared)
    quality = None
    if location.kind == "photo":
        quality = PhotoQuality(glare, sharpness(cut), fringes, round(min(location.size) / scale),
                               location.keystone, light)
    return cut, chroma, Straightened(location, picture, quality)


def glare_filled(gray: np.ndarray, glared: np.ndarray) -> np.ndarray:
    """An 8-bit gray film with its saturated patches (`glared`, boolean) and their halo filled from
    around them. Training's reflections (core.learning.pipeline.reflected_light) fill theirs with it, so
    that the model learns what screening shows it."""
    return cv2.inpaint(gray, _with_halo(glared), GLARE_FILL, cv2.INPAINT_TELEA)


def _with_halo(glared: np.ndarray) -> np.ndarray:
    """The saturated patches with their halo (8-bit mask): each patch grown by GLARE_RIM pixels and by
    GLARE_HALO of its own radius, so a large reflection takes its wide halo and a speck only its rim. The
    radius is the patch's inscribed one (its deepest pixel's distance to its edge): a reflection's disc gets
    what the disc of its area would, but a thin bright strip (a film's clear edge, a sliver of lightbox)
    only its rim, where a disc of its area would have spread over much of the film."""
    distance, nearest = cv2.distanceTransformWithLabels(np.uint8(~glared), cv2.DIST_L2, 5,
                                                        labelType=cv2.DIST_LABEL_CCOMP)
    depth = cv2.distanceTransform(np.uint8(glared), cv2.DIST_L2, 5)
    radius = np.zeros(int(nearest.max()) + 1, np.float32)
    np.maximum.at(radius, nearest[glared], depth[glared])
    return np.uint8(distance <= GLARE_RIM + GLARE_HALO * radius[nearest])


def display_copy(picture: np.ndarray) -> np.ndarray:
    """A picture shrunk to at most DISPLAY_SIDE pixels a side: what a result keeps to show beside the
    straightened film (a session keeps many results; a phone photo decodes to megabytes)."""
    scale = DISPLAY_SIDE / max(picture.shape[:2])
    return cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else picture


def sharpness(gray: np.ndarray) -> float:
    """Mean absolute Laplacian over the intensity spread, at a fixed size: contrast and size cancel.
    Smoothed a little first, so that a phone's sensor noise does not pass for detail."""
    scale = SHARPNESS_SIDE / min(gray.shape)
    view = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)
    view = cv2.GaussianBlur(view, (0, 0), SHARPNESS_SMOOTHING)
    return float(np.abs(cv2.Laplacian(view, cv2.CV_32F)).mean() / max(float(view.std()), 1.0))


def _light_band(picture: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The picture (gray or RGB) at LIGHT_SIDE, the band of it just outside the film, LIGHT_BAND of the
    side deep, and the copy's scale."""
    scale = min(1.0, LIGHT_SIDE / max(picture.shape[:2]))
    small = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else picture
    film = np.zeros(small.shape[:2], np.uint8)
    cv2.fillConvexPoly(film, (corners * scale).round().astype(np.int32), 1)
    depth = max(3, round(LIGHT_BAND * max(small.shape[:2])))
    return small, cv2.dilate(film, np.ones((depth, depth), np.uint8)) > film, scale


def uneven_light(gray: np.ndarray, corners: np.ndarray) -> float:
    """How much brighter the light is beside part of the film than around most of it: the band just
    outside the film, in sectors round its centre, brightest median over the median sector's, less one.
    The film's own light cannot be told from its anatomy; the light around it can."""
    small, band, scale = _light_band(gray, corners)
    rows, columns = np.nonzero(band)
    centre = corners.mean(axis=0) * scale
    sector = ((np.arctan2(rows - centre[1], columns - centre[0]) + np.pi) / (2 * np.pi) * LIGHT_SECTORS).astype(int)
    levels = [np.median(small[rows, columns][sector == k]) for k in range(LIGHT_SECTORS) if (sector == k).any()]
    return float(max(levels) / max(float(np.median(levels)), 1.0) - 1) if levels else 0.0


def flattened(cut: np.ndarray, picture: np.ndarray, location: Location) -> np.ndarray:
    """The straightened film `cut` of an 8-bit gray or RGB photo with the light's excess over the lightbox
    around it taken off, channel by channel: the band's excess over its median, held on a coarse grid where
    the band covers a cell and relaxed to the harmonic fill across the film. Only a brightening is taken
    off (a window's bar or a hand darkens the band without darkening the film); in each channel, so that
    a window's white light over a film on a tinted lightbox leaves one tint for white balance to take off."""
    small, band, scale = _light_band(picture, location.corners)
    levels = small.astype(np.float32).reshape(*small.shape[:2], -1)
    excess = np.where(band[..., np.newaxis], np.maximum(levels - np.median(levels[band], axis=0), 0), 0)
    grid = (LIGHT_GRID, LIGHT_GRID)
    cover = cv2.resize(band.astype(np.float32), grid, interpolation=cv2.INTER_AREA)
    known = (cover > 0.5)[..., np.newaxis]
    held = cv2.resize(excess, grid, interpolation=cv2.INTER_AREA).reshape(*grid, -1) / np.maximum(cover, 1e-6)[
        ..., np.newaxis]
    held = np.where(known, held, 0)
    field = held.copy()
    for _ in range(LIGHT_SPREAD_STEPS):
        field = np.where(known, held, cv2.blur(field, (3, 3)).reshape(field.shape))
    light = cv2.resize(field, small.shape[1::-1], interpolation=cv2.INTER_CUBIC).reshape(levels.shape)
    on_film = straighten(light, Location(location.kind, location.corners * np.float32(scale)))
    on_film = cv2.resize(on_film, cut.shape[1::-1], interpolation=cv2.INTER_LINEAR).reshape(*cut.shape[:2], -1)
    return np.uint8(np.clip(cut.astype(np.float32) - on_film.reshape(cut.shape), 0, 255) + 0.5)


def moire(rgb: np.ndarray) -> float:
    """Fine colour fringes of a white-balanced picture (chroma spread at MOIRE_SIDE): a screen's red,
    green and blue subpixels beating with the camera's grid leave them; a film is grey at every scale."""
    red_green, yellow_blue = _opponent_colours(rgb, MOIRE_SIDE)
    return float(np.hypot(red_green.std(), yellow_blue.std()))
