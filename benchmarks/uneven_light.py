"""Uneven light on a photographed film: does flattening it (what ships, core.serving.photo.flattened,
with the warning) keep normal X-rays' scores nearer where they were than warning alone?

Usage: python -m benchmarks.uneven_light [--count 100] [--model NAME] [--data DIR]

Validation X-rays (patients never trained on) are rendered by the photo proxy (core.analysis.photos,
the renderer the finder was fitted on) with uneven light, and with even light on a lightbox and against
a window (where flattening could only do harm). Each photo is screened bytes in as shipped (flattened
where the light is uneven, and warned), and again with flattening turned off (warned only). Against the
digital file of each X-ray it prints, for normal X-rays and for all: the median |dp|, the median rise
in p, and specificity (sensitivity for pneumonia) at the screening threshold.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.analysis import data, photos
from core.analysis.reports import split_examples
from core.serving import photo
from core.serving.imaging import ImageError, decode_image
from core.serving.predictor import Predictor
from core.serving.settings import DEFAULT_OPERATING_POINT

RENDERINGS = ("uneven light", "film on a lightbox", "film against a window")


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
    digital, shipped, warned = [], {n: [] for n in RENDERINGS}, {n: [] for n in RENDERINGS}
    for index, example in enumerate(examples):
        raw = Path(example.path).read_bytes()
        digital.append(_p(predictor, raw))
        gray = decode_image(raw).pixels
        for name in RENDERINGS:
            picture = photos.render(gray, name, seed=index)
            shipped[name].append(_p(predictor, picture.data))
            with unflattened():
                warned[name].append(_p(predictor, picture.data))
    labels, digital = data.labels_of(examples), np.array(digital)
    return {"model": predictor.name, "images": len(examples), "normal": int((labels == 0).sum()),
            "threshold": threshold,
            "renderings": {name: {"flattened and warned (as shipped)": asdict(figures_of(np.array(shipped[name]),
                                                                                          digital, labels, threshold)),
                                  "warned only": asdict(figures_of(np.array(warned[name]), digital, labels, threshold))}
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
