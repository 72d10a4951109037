"""Uneven light on a photographed film: does flattening it keep normal X-rays' scores where they were,
or is warning (what ships: core.serving.quality.UNEVEN_LIGHT_WARNED) all that can be done?

Usage: python -m benchmarks.uneven_light [--count 100] [--model NAME] [--data DIR]

Validation X-rays (patients never trained on) are rendered by the photo proxy (core.analysis.photos,
the renderer the finder was fitted on) with uneven light, and with even light on a lightbox and against
a window (where flattening could only do harm). Each photo is screened as sent (warned, not corrected),
and flattened where it is warned: the light's excess measured in the band of lightbox just around the film, spread over
the film by harmonic interpolation and taken off the straightened film, which is then screened as a
digital file. Against the digital file of each X-ray it prints, for normal X-rays and for all: the median
|dp|, the median rise in p, and specificity (sensitivity for pneumonia) at the screening threshold.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from core.analysis import data, photos
from core.analysis.reports import split_examples
from core.analysis.synthetic import encode
from core.serving import photo
from core.serving.imaging import ImageError, decode_image
from core.serving.predictor import Predictor
from core.serving.quality import UNEVEN_LIGHT_WARNED
from core.serving.settings import DEFAULT_OPERATING_POINT

RENDERINGS = ("uneven light", "film on a lightbox", "film against a window")
GRID = 48  # the light's excess is spread over the film on a grid this many cells a side
SPREAD_STEPS = 400  # Jacobi steps of the harmonic interpolation on that grid


@dataclass(frozen=True)
class Figures:
    """How one way of handling a rendering moved the model's answer from the digital file's."""

    screened: float
    median_abs_dp_normal: float
    median_rise_normal: float
    specificity: float
    digital_specificity: float
    median_abs_dp: float
    sensitivity: float
    digital_sensitivity: float


def flattened(payload: bytes) -> np.ndarray | None:
    """The straightened film of a photo, where its light is warned uneven with the light's excess over
    the lightbox around it taken off (only a brightening: a window's bar darkens the band without
    darkening the film); None where no film is found."""
    decoded = decode_image(payload)
    if decoded.straightened is None:
        return None
    if decoded.straightened.quality.uneven_light <= UNEVEN_LIGHT_WARNED:
        return decoded.pixels
    picture, location = decoded.straightened.picture, decoded.straightened.location
    gray = photo.gray_of(picture).astype(np.float32)
    film = np.zeros(gray.shape, np.uint8)
    cv2.fillConvexPoly(film, location.corners.round().astype(np.int32), 1)
    depth = max(3, round(photo.LIGHT_BAND * max(gray.shape)))
    band = (cv2.dilate(film, np.ones((depth, depth), np.uint8)) > film)
    excess = np.where(band, np.maximum(gray - float(np.median(gray[band])), 0), 0).astype(np.float32)
    # On a coarse grid: the band's excess held, the film's interior relaxed to the harmonic fill.
    small = cv2.resize(excess, (GRID, GRID), interpolation=cv2.INTER_AREA)
    weight = cv2.resize(band.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
    known = weight > 0.5
    small = np.where(known, small / np.maximum(weight, 1e-6), 0)
    field = small.copy()
    for _ in range(SPREAD_STEPS):
        field = np.where(known, small, cv2.blur(field, (3, 3)))
    light = cv2.resize(field, gray.shape[::-1], interpolation=cv2.INTER_CUBIC)
    cut = decoded.pixels.astype(np.float32)
    excess_on_film = cv2.resize(photo.straighten(light, location), cut.shape[::-1])
    # The straightened film was stretched to the full 8-bit range: the excess is taken off on its scale.
    film_range = np.ptp(photo.straighten(gray, location)) or 1.0
    return np.uint8(np.clip(cut - excess_on_film * 255 / film_range, 0, 255) + 0.5)


def _p(predictor: Predictor, payload: bytes) -> float:
    try:
        return predictor.screen(payload, DEFAULT_OPERATING_POINT).probability
    except ImageError:
        return float("nan")


def figures_of(p: np.ndarray, digital: np.ndarray, labels: np.ndarray, threshold: float) -> Figures:
    screened = ~np.isnan(p)
    normal, sick = screened & (labels == 0), screened & (labels == 1)
    return Figures(
        screened=float(screened.mean()),
        median_abs_dp_normal=float(np.median(np.abs(p[normal] - digital[normal]))),
        median_rise_normal=float(np.median(p[normal] - digital[normal])),
        specificity=float(np.mean(p[normal] < threshold)),
        digital_specificity=float(np.mean(digital[normal] < threshold)),
        median_abs_dp=float(np.median(np.abs(p[screened] - digital[screened]))),
        sensitivity=float(np.mean(p[sick] >= threshold)),
        digital_sensitivity=float(np.mean(digital[sick] >= threshold)))


def measure(count: int, model: str | None, data_dir) -> dict:
    predictor = Predictor.load(model)
    examples = split_examples(data_dir, "validation", predictor.card.split_seed)
    chosen = sorted(np.random.default_rng(0).choice(len(examples), min(count, len(examples)), replace=False))
    examples = [examples[i] for i in chosen]
    threshold = float(predictor.operating_points[DEFAULT_OPERATING_POINT])
    digital, as_sent, flat = [], {n: [] for n in RENDERINGS}, {n: [] for n in RENDERINGS}
    for index, example in enumerate(examples):
        raw = Path(example.path).read_bytes()
        digital.append(_p(predictor, raw))
        gray = decode_image(raw).pixels
        for name in RENDERINGS:
            picture = photos.render(gray, name, seed=index)
            as_sent[name].append(_p(predictor, picture.data))
            film = flattened(picture.data)
            flat[name].append(float("nan") if film is None else _p(predictor, encode(film, "PNG")))
    labels, digital = data.labels_of(examples), np.array(digital)
    return {"model": predictor.name, "images": len(examples), "normal": int((labels == 0).sum()),
            "threshold": threshold,
            "renderings": {name: {"warned (as shipped)": asdict(figures_of(np.array(as_sent[name]), digital, labels,
                                                                           threshold)),
                                  "flattened": asdict(figures_of(np.array(flat[name]), digital, labels, threshold))}
                           for name in RENDERINGS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="validation X-rays rendered (default 100)")
    parser.add_argument("--model", default=None, help="default: the manifest's default")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    print(json.dumps(measure(args.count, args.model, args.data or data.default_data_dir()), indent=1))


if __name__ == "__main__":
    main()
