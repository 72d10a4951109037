"""An ensemble assembled from trained files: each member calibrated under shift, then averaged.

Members trained apart (each by its own card's command, in the background, in parallel) are
combined without training again. Calibration is fitted on the validation images as they are
and under every acquisition shift of the shift check (core.analysis.shift), because a fit on
the training hospital's images alone was over-confident at another period (Tomani et al.
2021); each member is calibrated before the average (Ovadia et al. 2019: ensembles of
calibrated members keep calibration best under shift). The screening rule is unchanged: the
operating points come from the plain validation images.
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core.analysis import data, evaluation
from core.analysis.reports import in_batches, split_examples
from core.analysis.shift import SHIFTS, shifted_probabilities
from core.learning import ensemble, keras_model
from core.learning.export import export
from core.learning.pipeline import hardware
from core.serving import registry
from core.serving.calibration import apply_calibration, logit, sigmoid
from core.serving.card import ModelCard
from core.serving.imaging import preprocess
from core.serving.predictor import Predictor

CALIBRATION_DATA = "validation images as they are and under every acquisition shift of the shift check"


def pooled(by_shift: dict[str, np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of every shift's images together: what a calibration under shift is fitted on."""
    return np.tile(labels, len(by_shift)), np.concatenate(list(by_shift.values()))


def calibrated_logit(raw: np.ndarray, calibration: dict) -> np.ndarray:
    return calibration["slope"] * logit(raw) + calibration["intercept"]


def combined(member_raw: list[np.ndarray], calibrations: list[dict]) -> np.ndarray:
    """What the ensemble's network outputs: the sigmoid of its members' mean calibrated logit.
    The test-time zooms' logit average commutes with it, so members' averaged outputs suffice."""
    return sigmoid(np.mean([calibrated_logit(r, c) for r, c in zip(member_raw, calibrations)], axis=0))


def held_out_ece(by_shift: dict[str, np.ndarray], labels: np.ndarray, patients: list[str],
                 fit_shifts: list[str]) -> dict[str, float]:
    """ECE under each shift of a Platt calibration fitted on fit_shifts' images of the other half
    of the patients, averaged over the two halves."""
    unique = sorted(set(patients))
    half = {patient: k % 2 for k, patient in enumerate(np.random.default_rng(0).permutation(unique))}
    fold = np.array([half[p] for p in patients])
    eces: dict[str, list[float]] = {shift: [] for shift in by_shift}
    for k in (0, 1):
        fitting = fold != k
        fitted = evaluation.fit_calibration(np.tile(labels[fitting], len(fit_shifts)),
                                            np.concatenate([by_shift[s][fitting] for s in fit_shifts]))
        for shift, raw in by_shift.items():
            eces[shift].append(evaluation.expected_calibration_error(
                labels[~fitting], apply_calibration(raw[~fitting], fitted))[0])
    return {shift: float(np.mean(values)) for shift, values in eces.items()}


def check_members(members: list[Predictor]) -> None:
    """Members must read images alike and share the patient split, or the average means nothing."""
    first = members[0]
    for member in members[1:]:
        if (member.spec, member.card.split_seed, member.test_time_zooms) != (
                first.spec, first.card.split_seed, first.test_time_zooms):
            raise ValueError(f"ensemble members must read images alike, share the patient split and the "
                             f"test-time zooms: {first.name} and {member.name} differ")


def assemble(members: list[tuple[str, Path | None]], name: str, data_dir: Path,
             models_dir: Path | None = None, log=print) -> ModelCard:
    """Write NAME: the logit average of the named trained files, calibrated under shift."""
    predictors = [Predictor.load(member, directory) for member, directory in members]
    check_members(predictors)
    first = predictors[0]
    examples, images = data.decode_grays(split_examples(data_dir, "validation", first.card.split_seed))
    labels = data.labels_of(examples)
    log(f"scoring {len(images)} validation X-rays under {len(SHIFTS)} conditions with {len(predictors)} members")
    member_raw = [shifted_probabilities(p.raw_probabilities, images, p.spec, SHIFTS) for p in predictors]
    calibrations = [evaluation.fit_calibration(*pooled(raw, labels)) for raw in member_raw]
    ensemble_raw = {shift: combined([raw[shift] for raw in member_raw], calibrations) for shift in SHIFTS}
    calibration = {**evaluation.fit_calibration(*pooled(ensemble_raw, labels)), "fitted_on": CALIBRATION_DATA}

    networks = [keras_model.load(member, directory)[0] for member, directory in members]
    model = ensemble.combine(networks, name, calibrations)
    # The network itself must give what the calibration was fitted on.
    inputs = np.stack([preprocess(gray, first.spec) for gray in images])
    scorer = Predictor(keras_model.KerasNetwork(model), first.card)  # raw outputs: the card's zooms only
    served_raw = in_batches(scorer.raw_probabilities, inputs)
    gap = float(np.max(np.abs(served_raw - ensemble_raw["none"])))
    if gap > 1e-4:
        raise RuntimeError(f"the assembled network differs from its members' average by {gap:.2e}")
    calibration, points, validation = evaluation.validation_evidence(
        labels, served_raw, [e.patient for e in examples], calibration)
    validation["calibration_data"] = CALIBRATION_DATA
    patients = [e.patient for e in examples]
    # Fitted and measured on other patients (two folds), so that the comparison is not in-sample.
    validation["ece_under_shift_held_out"] = {
        "fitted on plain validation": held_out_ece(ensemble_raw, labels, patients, ["none"]),
        "fitted under shift": held_out_ece(ensemble_raw, labels, patients, list(SHIFTS))}
    cards = [p.card for p in predictors]
    card = ModelCard(
        name=name,
        architecture=f"ensemble of {len(cards)} {cards[0].architecture}",
        description=cards[0].description,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        preprocess=cards[0].preprocess,
        parameters=int(model.count_params()),
        test_time_zooms=list(cards[0].test_time_zooms),
        output="sigmoid of the members' mean logit, each member Platt-calibrated first, then Platt calibration; "
               f"every calibration fitted on the {CALIBRATION_DATA}",
        calibration=calibration,
        operating_points=points,
        training={
            "command": "python -m core " + " ".join(sys.argv[1:]),
            "recipe": cards[0].training.get("recipe", {}),
            "init_seed": cards[0].training.get("init_seed"),
            "ensemble": {
                "members": len(cards), "combination": "mean of the members' calibrated logits",
                "init_seeds": [c.training.get("init_seed") for c in cards],
                "member_files": [{"name": c.name, "sha256": c.sha256, "command": c.training["command"],
                                  "best_validation_auc": c.validation.get("auc"),
                                  "epochs_run": c.training.get("epochs_run"), "best_epoch": c.training.get("best_epoch"),
                                  "minutes": round(c.training.get("seconds", 0) / 60, 1),
                                  "hardware": c.training.get("hardware")} for c in cards],
                "member_calibrations": calibrations,
                "member_minutes": [round(c.training.get("seconds", 0) / 60, 1) for c in cards]},
            "hyperparameters_from": cards[0].training.get("hyperparameters_from"),
            "data_dir": Path(data_dir).name,
            "split": cards[0].training["split"],
            "counts": cards[0].training["counts"],
            "epochs_run": cards[0].training.get("epochs_run"),
            "best_epoch": cards[0].training.get("best_epoch"),
            "seconds": round(sum(c.training.get("seconds", 0) for c in cards), 1),
            "deterministic": all(c.training.get("deterministic") for c in cards),
            "strategy": cards[0].training.get("strategy"),
            "hardware": hardware(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        validation=evaluation.card_summary(validation),
    )
    card = export(model, keras_model.save(model, card, models_dir), models_dir)
    registry.save_report(name, "validation", {"model": name, "split": "validation (patient-level)", **validation},
                         models_dir)
    history = registry.load_report(first.name, "history", first.directory)
    if history:  # the training curves shown for an ensemble are its first member's, as `train --ensemble` does
        registry.save_report(name, "history", history, models_dir)
    for fit, eces in validation["ece_under_shift_held_out"].items():
        log(f"ECE on held-out patients, calibration {fit}: plain {eces['none']:.4f}, "
            f"worst under shift {max(eces.values()):.4f}")
    log(f"saved {card.file} and {card.onnx['file']}: validation AUC {validation['auc']:.4f}, ECE {validation['ece']:.4f}")
    return card
