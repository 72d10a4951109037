"""Acquisition-shift check: each model's validation metrics under imitated machine differences
(see core/analysis/shift.py), at the model's own fixed thresholds.

Usage: python -m benchmarks.shift [--model NAME ...] [--models-dir DIR] [--data DIR] [--save]
       python -m benchmarks.shift --ensemble NAME --ensemble NAME ... [--one-view] [--models-dir DIR]
       python -m benchmarks.shift --model LEVER [--models-dir DIR] --against BASE [--against-dir DIR]
--save writes models/NAME.shift.json, shown on the model comparison page, and
updates the manifest (the default-model rule: core.serving.registry.update_manifest).
--ensemble measures the logit average of trained files, calibrated and thresholded on
validation as `train --ensemble` does, without training them again; --one-view
drops their test-time zooms. --against compares a model with another on the same
shifted images, pairwise: lever minus base, with 95% intervals from resampling whole
patients (core.analysis.shift.paired_comparison), so that a lever is judged against
the validation sample's noise.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

from core.analysis import data, evaluation
from core.analysis.reports import in_batches, split_examples
from core.analysis.shift import PAIRED_METRICS, SHIFTS, paired_comparison, shift_report, shifted_probabilities
from core.serving import registry
from core.serving.calibration import logit_mean
from core.serving.imaging import preprocess
from core.serving.predictor import Predictor


@functools.lru_cache(maxsize=2)
def validation_images(data_dir, seed: int) -> tuple[list[data.Example], list[np.ndarray], np.ndarray]:
    """The decoded 8-bit validation images of the patient-level split, with their examples and labels
    (decoded once for all the models checked in one run)."""
    examples, images = data.decode_grays(split_examples(data_dir, "validation", seed))
    return examples, images, data.labels_of(examples)


def measure(predictor: Predictor, data_dir) -> dict:
    _, images, labels = validation_images(data_dir, predictor.card.split_seed)
    return {"model": predictor.name, "sha256": predictor.card.sha256, "split": "validation (patient-level)",
            **shift_report(predictor.probabilities, images, labels, predictor.spec, predictor.operating_points)}


def measure_ensemble(members: list[Predictor], data_dir, label: str,
                     test_time_zooms: list[float] | None = None) -> tuple[dict, dict]:
    """The members' raw outputs averaged in logit space, calibrated and thresholded on validation
    as training does: (its validation metrics, its shift report). test_time_zooms, when given,
    replace the members' own."""
    if test_time_zooms is not None:
        members = [member.with_test_time_zooms(test_time_zooms) for member in members]
    seed = members[0].card.split_seed
    if any(m.spec != members[0].spec or m.card.split_seed != seed for m in members):
        raise ValueError("ensemble members must read images alike and share the patient split: "
                         + ", ".join(f"{m.name} (split seed {m.card.split_seed})" for m in members))

    def raw(inputs):
        return logit_mean(np.stack([m.raw_probabilities(inputs) for m in members]))

    # Calibrated on the unshifted images the shift check decodes once, preprocessed as screening does.
    examples, images, labels = validation_images(data_dir, seed)
    inputs = np.stack([preprocess(gray, members[0].spec) for gray in images])
    calibration, points, validation = evaluation.validation_evidence(
        labels, in_batches(raw, inputs), [e.patient for e in examples])
    return validation, {"model": label, "members": [m.name for m in members], "split": "validation (patient-level)",
                        **shift_report(lambda x: evaluation.apply_calibration(raw(x), calibration),
                                       images, labels, members[0].spec, points)}


def measure_paired(base: Predictor, levers: list[Predictor], data_dir,
                   rounds: int = evaluation.BOOTSTRAP_ROUNDS) -> dict[str, list[dict]]:
    """Each lever minus the base under every shift of the validation images, each at its own
    thresholds (the base scored once for all)."""
    for lever in levers:
        if lever.card.split_seed != base.card.split_seed:
            raise ValueError(f"{base.name} and {lever.name} were validated on different patient splits "
                             f"(split seeds {base.card.split_seed} and {lever.card.split_seed})")
    examples, images, labels = validation_images(data_dir, base.card.split_seed)
    patients = [e.patient for e in examples]
    base_probabilities = shifted_probabilities(base.probabilities, images, base.spec, SHIFTS)
    return {lever.name: paired_comparison(
        labels, patients, base_probabilities, shifted_probabilities(lever.probabilities, images, lever.spec, SHIFTS),
        base.operating_points, lever.operating_points, rounds) for lever in levers}


PAIRED_HEADERS = {"auc": "AUC", "balanced_accuracy": "bal.acc", "screening_sensitivity": "scr.sens",
                  "screening_specificity": "scr.spec", "specificity_at_screening_sensitivity": "spec@sens.98"}


def print_paired(base: str, lever: str, rows: list[dict]) -> None:
    print(f"\n{lever} minus {base}: difference [95% interval over resampled patients]")
    print(f"{'shift':<38}" + "".join(f"{PAIRED_HEADERS[k]:>30}" for k in PAIRED_METRICS))
    for row in rows:
        cells = (row[k] for k in PAIRED_METRICS)
        print(f"{row['shift']:<38}" + "".join(
            f"{c['difference']:+9.4f} [{c['95ci'][0]:+8.4f},{c['95ci'][1]:+8.4f}]" for c in cells))


def print_report(report: dict) -> None:
    print(f"\n{report['model']} (n={report['n']})")
    print(f"{'shift':<24} {'AUC':>6} {'bal.acc':>8} {'scr.sens':>9} {'scr.spec':>9} {'spec@sens.98':>13} {'ECE':>6}")
    for row in report["shifts"]:
        print(f"{row['shift']:<24} {row['auc']:6.4f} {row['balanced_accuracy']:8.4f} "
              f"{row['screening_sensitivity']:9.4f} {row['screening_specificity']:9.4f} "
              f"{row['specificity_at_screening_sensitivity']:13.4f} {row['ece']:6.4f}")
    if "summary" in report:
        print("summary: " + ", ".join(f"{k} {v:.4f}" for k, v in report["summary"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", help="a model name (default: every model)")
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--data", default=None)
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--ensemble", action="append", metavar="NAME",
                        help="a member of a logit-averaged ensemble to measure (repeat for each member)")
    parser.add_argument("--one-view", action="store_true", help="the ensemble's members without test-time zooms")
    parser.add_argument("--against", metavar="BASE", help="compare each --model with this one, pairwise")
    parser.add_argument("--against-dir", type=Path, help="where BASE lies (default: the models folder)")
    args = parser.parse_args()
    data_dir = args.data or data.default_data_dir()
    if args.against:
        levers = [Predictor.load(name, args.models_dir) for name in args.model or parser.error("--against needs --model")]
        for name, rows in measure_paired(Predictor.load(args.against, args.against_dir), levers, data_dir).items():
            print_paired(args.against, name, rows)
        return
    if args.ensemble:
        members = [Predictor.load(name, args.models_dir) for name in args.ensemble]
        validation, report = measure_ensemble(members, data_dir, " + ".join(args.ensemble),
                                              [1.0] if args.one_view else None)
        print(f"validation: AUC {validation['auc']:.4f}, accuracy {validation['accuracy']:.4f}, "
              f"ECE {validation['ece']:.4f}")
        print_report(report)
        return
    for name in args.model or registry.model_names(args.models_dir):
        report = measure(Predictor.load(name, args.models_dir), data_dir)
        print_report(report)
        if args.save:
            registry.save_report(name, "shift", report, args.models_dir)
    if args.save:
        print(f"\ndefault model: {registry.update_manifest(args.models_dir)['default']}")


if __name__ == "__main__":
    main()
