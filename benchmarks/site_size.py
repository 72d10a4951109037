"""How many local X-rays does site calibration need? Sensitivity and specificity on new patients
against the number of local images it was given.

Usage: python -m benchmarks.site_size [--model NAME] [--draws 30] [--shift framing|edge-enhanced] [--data DIR]
The validation split is made into "another site" by a framing and contrast shift like the
withheld period's, or by a machine's strong edge enhancement, under which the shipped screening
point refers most healthy children (core.analysis.shift, benchmarks.sharpening). In each draw its patients are halved: the site
calibrates on N images of the first half (N = 50, 100, 200, 400) and is scored on the
second half at the site's screening point, next to the shipped point.
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.shift import validation_images
from core.analysis import data, evaluation, site_calibration
from core.analysis.reports import in_batches
from core.analysis.shift import lung_field_crop, sharpen
from core.analysis.site_calibration import LocalSet
from core.serving.imaging import preprocess
from core.serving.predictor import Predictor
from core.serving.site import SiteProfile

SIZES = (50, 100, 200, 400)
SITE_SHIFTS = {
    "framing": lung_field_crop(0.7, contrast=1.2),  # lungs fill the frame, higher contrast
    "edge-enhanced": sharpen(0.01, 2.0),  # unsharp masking at 1% of the side, strength 2
}


def local_subset(local: LocalSet, chosen: np.ndarray) -> LocalSet:
    return LocalSet(local.raw[chosen], local.labels[chosen], [local.patients[i] for i in chosen],
                    [local.image_hashes[i] for i in chosen])


def draw(local: LocalSet, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(calibration images: whole patients of one half, up to `size`; the other half's images)."""
    patients = np.array(local.patients)
    unique = rng.permutation(np.unique(patients))
    first = set(unique[: len(unique) // 2])
    pool = [p for p in unique if p in first]
    chosen: list[int] = []
    for patient in pool:
        members = np.flatnonzero(patients == patient)
        if len(chosen) + len(members) > size:
            continue
        chosen.extend(members)
        if len(chosen) == size:
            break
    held_out = np.flatnonzero(~np.isin(patients, list(first)))
    return np.array(chosen), held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--shift", choices=SITE_SHIFTS, default="framing")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    seed = predictor.card.split_seed
    data_dir = args.data or data.default_data_dir()
    examples, images, labels = validation_images(data_dir, seed)
    inputs = np.stack([preprocess(SITE_SHIFTS[args.shift](gray), predictor.spec) for gray in images])
    local = LocalSet(in_batches(predictor.raw_probabilities, inputs), np.asarray(labels),
                     [e.patient for e in examples], [str(i) for i in range(len(labels))])
    shipped = evaluation.apply_calibration(local.raw, predictor.calibration)
    rng = np.random.default_rng(0)
    print(f"{predictor.name} on the validation split, {args.shift} ({len(labels)} images, "
          f"{len(set(local.patients))} patients), {args.draws} draws per size; new patients' metrics")
    print(f"{'images':>7} {'sens mean':>10} {'sens 5th pct':>13} {'draws >= 0.97':>14} {'spec mean':>10} "
          f"{'shipped sens':>13} {'shipped spec':>13}")
    for size in SIZES:
        rows = []
        for _ in range(args.draws):
            chosen, held_out = draw(local, size, rng)
            content, _ = site_calibration.calibrate(predictor, local_subset(local, chosen), intervals=False)
            profile = SiteProfile.from_content(content, "draw")
            site = evaluation.apply_calibration(local.raw[held_out], profile.calibration)
            at_site = evaluation.metrics_at(local.labels[held_out], site, profile.operating_points["screening"])
            at_shipped = evaluation.metrics_at(local.labels[held_out], shipped[held_out],
                                               predictor.operating_points["screening"])
            rows.append((at_site["sensitivity"], at_site["specificity"], at_shipped["sensitivity"],
                         at_shipped["specificity"]))
        rows = np.array(rows)
        print(f"{size:>7} {rows[:, 0].mean():>10.3f} {np.percentile(rows[:, 0], 5):>13.3f} "
              f"{(rows[:, 0] >= 0.97).mean():>14.0%} {rows[:, 1].mean():>10.3f} {rows[:, 2].mean():>13.3f} "
              f"{rows[:, 3].mean():>13.3f}")


if __name__ == "__main__":
    main()
