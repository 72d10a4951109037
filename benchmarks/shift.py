"""Acquisition-shift check: each model's validation metrics under imitated machine differences
(see core/analysis/shift.py), at the model's own fixed thresholds.

Usage: python -m benchmarks.shift [--model NAME ...] [--models-dir DIR] [--data DIR] [--save]
--save writes models/NAME.shift.json, shown on the model comparison page, and
updates the manifest (the default-model rule: core.serving.registry.update_manifest).
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

from core.analysis.reports import split_examples
from core.analysis.shift import shift_report
from core.learning import data
from core.serving import registry
from core.serving.predictor import Predictor


@functools.lru_cache(maxsize=2)
def validation_images(data_dir, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The decoded 8-bit validation images of the patient-level split, with their labels
    (decoded once for all the models checked in one run)."""
    examples, images = data.decode_grays(split_examples(data_dir, "validation", seed))
    return images, data.labels_of(examples)


def measure(predictor: Predictor, data_dir) -> dict:
    images, labels = validation_images(data_dir, predictor.card.split_seed)
    return {"model": predictor.name, "sha256": predictor.card.sha256, "split": "validation (patient-level)",
            **shift_report(predictor.probabilities, images, labels, predictor.spec, predictor.operating_points)}


def print_report(report: dict) -> None:
    print(f"\n{report['model']} (n={report['n']})")
    print(f"{'shift':<24} {'AUC':>6} {'bal.acc':>8} {'scr.sens':>9} {'scr.spec':>9} {'ECE':>6}")
    for row in report["shifts"]:
        print(f"{row['shift']:<24} {row['auc']:6.4f} {row['balanced_accuracy']:8.4f} "
              f"{row['screening_sensitivity']:9.4f} {row['screening_specificity']:9.4f} {row['ece']:6.4f}")
    if "summary" in report:
        print("summary: " + ", ".join(f"{k} {v:.4f}" for k, v in report["summary"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", help="a model name (default: every model)")
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--data", default=None)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    data_dir = args.data or data.default_data_dir()
    for name in args.model or registry.model_names(args.models_dir):
        report = measure(Predictor.load(name, args.models_dir), data_dir)
        print_report(report)
        if args.save:
            registry.save_report(name, "shift", report, args.models_dir)
    if args.save:
        print(f"\ndefault model: {registry.update_manifest(args.models_dir)['default']}")


if __name__ == "__main__":
    main()
