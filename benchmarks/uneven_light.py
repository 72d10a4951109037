"""Uneven light on a photographed film: does flattening it (what ships, core.serving.photo.flattened,
with the warning) keep normal X-rays' scores nearer where they were than warning alone?

Usage: python -m benchmarks.uneven_light [--count 100] [--renderer proxy|randomised] [--model NAME]
       [--data DIR]

Validation X-rays (patients never trained on) are rendered with uneven light, and with even light
(where flattening could only do harm): by the photo proxy (core.analysis.photos, the renderer the
finder was fitted on: uneven light, even light on a lightbox and against a window), or by the second
renderer (benchmarks.randomised_photos, reported and never tuned on: its uneven light, all together,
and the film on a larger lightbox, whose light is even but for the lens). Each photo is screened bytes
in as shipped (flattened where the light measures uneven, and warned), and again with flattening turned
off (warned only). Against the digital file of each X-ray it prints, for normal X-rays and for all: the
median |dp|, the median rise in p, and specificity (sensitivity for pneumonia) at the screening
threshold; and the share of photos whose light measured uneven (core.serving.photo.UNEVEN_LIGHT), with
normal X-rays' specificity among those and among the rest, so that a light that is not measured can be
told from one that is measured but not flattened away.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import randomised_photos
from core.analysis import data, photos
from core.analysis.reports import split_examples
from core.serving import photo
from core.serving.imaging import ImageError, decode_image
from core.serving.predictor import Predictor
from core.serving.settings import DEFAULT_OPERATING_POINT

# renderer -> (its render(gray, name, seed), the renderings measured)
RENDERERS = {"proxy": (photos.render, ("uneven light", "film on a lightbox", "film against a window")),
             "randomised": (randomised_photos.render,
                            ("uneven light", "all together", "film on a larger lightbox at a slant"))}


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
    measured_uneven: float  # share of the screened photos whose light measured uneven
    specificity_measured_uneven: float | None  # normal X-rays among those: the photos', then the digital files'
    digital_specificity_measured_uneven: float | None
    specificity_elsewhere: float | None  # normal X-rays among the rest
    digital_specificity_elsewhere: float | None


@contextmanager
def unflattened() -> Iterator[None]:
    """Photos decoded without flattening their light (the warning is left as it is)."""
    shipped = photo.UNEVEN_LIGHT
    photo.UNEVEN_LIGHT = float("inf")
    try:
        yield
    finally:
        photo.UNEVEN_LIGHT = shipped


def _p(predictor: Predictor, payload: bytes) -> float:
    try:
        return predictor.screen(payload, DEFAULT_OPERATING_POINT).probability
    except ImageError:
        return float("nan")


def measured_uneven(payload: bytes) -> bool:
    """Whether the photo's light measures uneven across its film, as screening measures it."""
    try:
        straightened = decode_image(payload).straightened
    except ImageError:
        return False
    quality = straightened.quality if straightened is not None else None  # None: read as a digital file
    return quality is not None and quality.uneven_light > photo.UNEVEN_LIGHT


def _specificity(p: np.ndarray, where: np.ndarray, threshold: float) -> float | None:
    """At the threshold over the X-rays `where` picks; None where it picks none (strict JSON has no NaN)."""
    return float(np.mean(p[where] < threshold)) if where.any() else None


def figures_of(p: np.ndarray, digital: np.ndarray, labels: np.ndarray, threshold: float,
               uneven: np.ndarray) -> Figures:
    """`uneven`: per photo, whether its light measured uneven (measured_uneven)."""
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
        digital_sensitivity=float(np.mean(digital[sick] >= threshold)),
        measured_uneven=float(uneven[screened].mean()),
        specificity_measured_uneven=_specificity(p, normal & uneven, threshold),
        digital_specificity_measured_uneven=_specificity(digital, normal & uneven, threshold),
        specificity_elsewhere=_specificity(p, normal & ~uneven, threshold),
        digital_specificity_elsewhere=_specificity(digital, normal & ~uneven, threshold))


def measure(count: int, model: str | None, data_dir, renderer: str = "proxy") -> dict:
    predictor = Predictor.load(model)
    examples = split_examples(data_dir, "validation", predictor.card.split_seed)
    chosen = sorted(np.random.default_rng(0).choice(len(examples), min(count, len(examples)), replace=False))
    examples = [examples[i] for i in chosen]
    threshold = float(predictor.operating_points[DEFAULT_OPERATING_POINT])
    render, renderings = RENDERERS[renderer]
    digital = []
    shipped, warned, uneven = ({n: [] for n in renderings} for _ in range(3))
    for index, example in enumerate(examples):
        raw = Path(example.path).read_bytes()
        digital.append(_p(predictor, raw))
        gray = decode_image(raw).pixels
        for name in renderings:
            picture = render(gray, name, seed=index)
            shipped[name].append(_p(predictor, picture.data))
            uneven[name].append(measured_uneven(picture.data))
            with unflattened():
                warned[name].append(_p(predictor, picture.data))
    labels, digital = data.labels_of(examples), np.array(digital)
    figures = lambda p, name: asdict(figures_of(np.array(p), digital, labels, threshold, np.array(uneven[name])))
    return {"model": predictor.name, "images": len(examples), "normal": int((labels == 0).sum()),
            "renderer": renderer, "threshold": threshold,
            "renderings": {name: {"flattened and warned (as shipped)": figures(shipped[name], name),
                                  "warned only": figures(warned[name], name)}
                           for name in renderings}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="validation X-rays rendered (default 100)")
    parser.add_argument("--renderer", choices=list(RENDERERS), default="proxy")
    parser.add_argument("--model", default=None, help="default: the manifest's default")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    print(json.dumps(measure(args.count, args.model, args.data or data.default_data_dir(), args.renderer), indent=1))


if __name__ == "__main__":
    main()
