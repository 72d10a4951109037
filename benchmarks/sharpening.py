"""Sharpening sweep: screening under unsharp masking at more widths and strengths than the
shift check's one (width 1% of the side, strength 1).

Detectors enhance edges at scales and strengths of their own. Training may augment
sharpness at some widths (Recipe.sharpness_widths, up to 2% of the side, strength
up to 1); the widest and strongest rows here lie beyond what any recipe trains on,
so they say whether robustness carries past the augmented range.

Usage: python -m benchmarks.sharpening [--model NAME ...] [--models-dir DIR] [--data DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.shift import print_report, validation_images
from core.analysis import data
from core.analysis.shift import SHIFTS, sharpen, shift_rows
from core.serving import registry
from core.serving.predictor import Predictor

WIDTHS = (0.005, 0.01, 0.02, 0.04)  # shares of the image side
STRENGTHS = (1.0, 2.0)
SWEEP = {"none": SHIFTS["none"]} | {
    f"sharpened {width:.1%} x{strength:g}": sharpen(width, strength) for width in WIDTHS for strength in STRENGTHS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="a model name (default: every model)")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    data_dir = args.data or data.default_data_dir()
    for name in args.model or registry.model_names(args.models_dir):
        predictor = Predictor.load(name, args.models_dir)
        _, images, labels = validation_images(data_dir, predictor.card.split_seed)
        rows = shift_rows(predictor.probabilities, images, labels, predictor.spec, predictor.operating_points, SWEEP)
        print_report({"model": name, "n": len(labels), "shifts": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
