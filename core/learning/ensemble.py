"""Ensembles: several trained networks averaged in logit space, saved as one Keras model.

Members trained from different initialisations make different mistakes on images unlike their
training data; averaging their logits (a geometric mean of odds) keeps what they agree on. The heat
map of an ensemble is the average of its members' maps, each scaled to [0, 1] first so no member
dominates.

`core ensemble` (`assemble` here) combines files trained apart (each by its own card's command, in the
background, in parallel) without training again, and calibrates each member first. Calibration is
fitted on the validation images as they are and under every acquisition shift of the shift check
(core.analysis.shift), because a fit on the training hospital's images alone was over-confident at
another period (Tomani et al. 2021); each member is calibrated before the average (Ovadia et al.
2019: ensembles of calibrated members keep calibration best under shift). The screening rule is
unchanged: the operating points come from the plain validation images. `train --ensemble N` saves
the N members it trains as the same kind of model, without calibrating each member first.
"""
from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from core.analysis import data, evaluation
from core.analysis.reports import in_batches, split_examples
from core.analysis.shift import SHIFTS, shifted_probabilities
from core.learning.pipeline import hardware
from core.serving import registry
from core.serving.calibration import apply_calibration, logit, sigmoid
from core.serving.card import ModelCard
from core.serving.imaging import preprocess
from core.serving.predictor import Predictor

# keras_model and export import this module (the layer that model files refer to, the graph), so
# the steps that need them import them when they run.

MEAN_LAYER = "ensemble_mean"
EPSILON = 1e-7
CALIBRATION_DATA = "validation images as they are and under every acquisition shift of the shift check"


@keras.saving.register_keras_serializable(package="core")
class ProbabilityToLogit(layers.Layer):
    """The logit of a sigmoid output, clipped away from 0 and 1, then the member's own Platt
    calibration (slope * logit + intercept; 1 and 0 leave it as it is)."""

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.slope, self.intercept = float(slope), float(intercept)

    def call(self, probabilities):
        p = keras.ops.clip(keras.ops.cast(probabilities, "float32"), EPSILON, 1.0 - EPSILON)
        logit = keras.ops.log(p) - keras.ops.log(1.0 - p)  # no Log1p: ONNX export lacks it
        return self.slope * logit + self.intercept

    def get_config(self) -> dict:
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept}


def combine(models: list[keras.Model], name: str, calibrations: list[dict] | None = None) -> keras.Model:
    """One model whose output is the sigmoid of the members' mean (calibrated) logit."""
    inputs = keras.Input(shape=models[0].input_shape[1:], name="image")
    # Renamed copies (same layers and weights): members need unique names inside the ensemble.
    members = [keras.Model(m.inputs, m.outputs, name=f"member_{i}") for i, m in enumerate(models)]
    return keras.Model(inputs, mean_of_logits([member(inputs) for member in members], calibrations), name=name)


def mean_of_logits(probabilities: list, calibrations: list[dict] | None = None) -> keras.KerasTensor:
    """The sigmoid of the mean logit of the members' probabilities, each calibrated first."""
    calibrations = calibrations or [{"slope": 1.0, "intercept": 0.0}] * len(probabilities)
    logits = [ProbabilityToLogit(c["slope"], c["intercept"], name=f"logit_{i}")(p)
              for i, (p, c) in enumerate(zip(probabilities, calibrations))]
    mean = layers.Average(name=MEAN_LAYER)(logits)
    return layers.Activation("sigmoid", dtype="float32", name="probability")(mean)


def member_calibrations(model: keras.Model) -> list[dict]:
    """Each member's calibration inside an ensemble, in member order (for its serving graph)."""
    found = sorted((layer for layer in model.layers if isinstance(layer, ProbabilityToLogit)),
                   key=lambda layer: int(layer.name.rsplit("_", 1)[1]))
    return [{"slope": layer.slope, "intercept": layer.intercept} for layer in found]


def members(model: keras.Model) -> list[keras.Model]:
    """The member networks of an ensemble; empty for any other model."""
    if not any(layer.name == MEAN_LAYER for layer in model.layers):
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def calibrated_logit(raw: np.ndarray, calibration: dict) -> np.ndarray:
    return calibration["slope"] * logit(raw) + calibration["intercept"]


def combined_probabilities(member_raw: list[np.ndarray], calibrations: list[dict]) -> np.ndarray:
    """What the ensemble's network outputs: the sigmoid of its members' mean calibrated logit.
    The test-time zooms' logit average commutes with it, so members' averaged outputs suffice."""
    return sigmoid(np.mean([calibrated_logit(r, c) for r, c in zip(member_raw, calibrations)], axis=0))


def pooled(by_shift: dict[str, np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of every shift's images together: what a calibration under shift is fitted on."""
    return np.tile(labels, len(by_shift)), np.concatenate(list(by_shift.values()))


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


@dataclass
class ValidationScores:
    """The validation images and each member's raw outputs on them, by shift."""
    examples: list[data.Example]
    images: list[np.ndarray]
    labels: np.ndarray
    members: list[dict[str, np.ndarray]]

    @property
    def patients(self) -> list[str]:
        return [e.patient for e in self.examples]


def check_members(members: list[Predictor]) -> None:
    """Members must read images alike and share the patient split, or the average means nothing."""
    first = members[0]
    for member in members[1:]:
        if (member.spec, member.card.split_seed, member.test_time_zooms) != (
                first.spec, first.card.split_seed, first.test_time_zooms):
            raise ValueError(f"ensemble members must read images alike, share the patient split and the "
                             f"test-time zooms: {first.name} and {member.name} differ")


def load_members(members: list[tuple[str, Path | None]]) -> list[Predictor]:
    """The members' served files, refused unless they can be averaged."""
    predictors = [Predictor.load(member, directory) for member, directory in members]
    check_members(predictors)
    return predictors


def score_validation(predictors: list[Predictor], data_dir: Path, log) -> ValidationScores:
    """Each member's raw outputs on the validation images, as they are and under every shift."""
    examples, images = data.decode_grays(split_examples(data_dir, "validation", predictors[0].card.split_seed))
    log(f"scoring {len(images)} validation X-rays under {len(SHIFTS)} conditions with {len(predictors)} members")
    return ValidationScores(examples, images, data.labels_of(examples),
                            [shifted_probabilities(p.raw_probabilities, images, p.spec, SHIFTS) for p in predictors])


def calibrate_members(scores: ValidationScores) -> list[dict]:
    """Each member's Platt calibration, fitted on its outputs under every shift together."""
    return [evaluation.fit_calibration(*pooled(raw, scores.labels)) for raw in scores.members]


def averaged(scores: ValidationScores, calibrations: list[dict]) -> dict[str, np.ndarray]:
    """The ensemble's raw outputs under every shift: its calibrated members' average."""
    return {shift: combined_probabilities([raw[shift] for raw in scores.members], calibrations) for shift in SHIFTS}


def build_network(members: list[tuple[str, Path | None]], name: str, calibrations: list[dict]) -> keras.Model:
    """The members' Keras networks in one graph, each behind its own calibration."""
    from core.learning import keras_model

    return combine([keras_model.load(member, directory)[0] for member, directory in members], name, calibrations)


def verified_outputs(model: keras.Model, first: Predictor, scores: ValidationScores,
                     expected: np.ndarray) -> np.ndarray:
    """The network's raw outputs on the plain validation images, refused unless they are its
    members' average: the network itself must give what the calibration was fitted on."""
    from core.learning import keras_model

    inputs = np.stack([preprocess(gray, first.spec) for gray in scores.images])
    scorer = Predictor(keras_model.KerasNetwork(model), first.card)  # raw outputs: the card's zooms only
    served = in_batches(scorer.raw_probabilities, inputs)
    gap = float(np.max(np.abs(served - expected)))
    if gap > 1e-4:
        raise RuntimeError(f"the assembled network differs from its members' average by {gap:.2e}")
    return served


def evidence_under_shift(scores: ValidationScores, served: np.ndarray,
                         by_shift: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """The ensemble's calibration (fitted under every shift), operating points (from the plain
    images) and validation report, with the ECE under shift of both calibrations on held-out patients."""
    fitted = {**evaluation.fit_calibration(*pooled(by_shift, scores.labels)), "fitted_on": CALIBRATION_DATA}
    calibration, points, validation = evaluation.validation_evidence(scores.labels, served, scores.patients, fitted)
    validation["calibration_data"] = CALIBRATION_DATA
    # Fitted and measured on other patients (two folds), so that the comparison is not in-sample.
    validation["ece_under_shift_held_out"] = {
        "fitted on plain validation": held_out_ece(by_shift, scores.labels, scores.patients, ["none"]),
        "fitted under shift": held_out_ece(by_shift, scores.labels, scores.patients, list(SHIFTS))}
    return calibration, points, validation


def member_file(card: ModelCard) -> dict:
    """What an ensemble's card keeps of one member's file: where it came from and how it trained."""
    return {"name": card.name, "sha256": card.sha256, "command": card.training["command"],
            "best_validation_auc": card.validation.get("auc"),
            "epochs_run": card.training.get("epochs_run"), "best_epoch": card.training.get("best_epoch"),
            "epoch_chosen_by": card.training.get("epoch_chosen_by"),
            "minutes": round(card.training.get("seconds", 0) / 60, 1),
            "hardware": card.training.get("hardware")}


def ensemble_card(name: str, cards: list[ModelCard], model: keras.Model, calibrations: list[dict],
                  calibration: dict, points: dict, validation: dict, data_dir: Path) -> ModelCard:
    """The ensemble's card: the first member's preprocessing and recipe, every member's file and
    calibration, and the ensemble's own calibration and operating points."""
    first = cards[0]
    return ModelCard(
        name=name,
        architecture=f"ensemble of {len(cards)} {first.architecture}",
        description=first.description,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        preprocess=first.preprocess,
        parameters=int(model.count_params()),
        test_time_zooms=list(first.test_time_zooms),
        output="sigmoid of the members' mean logit, each member Platt-calibrated first, then Platt calibration; "
               f"every calibration fitted on the {CALIBRATION_DATA}",
        calibration=calibration,
        operating_points=points,
        training={
            "command": "python -m core " + " ".join(sys.argv[1:]),
            "recipe": first.training.get("recipe", {}),
            "init_seed": first.training.get("init_seed"),
            "ensemble": {
                "members": len(cards), "combination": "mean of the members' calibrated logits",
                "init_seeds": [c.training.get("init_seed") for c in cards],
                "member_files": [member_file(c) for c in cards],
                "member_calibrations": calibrations,
                "member_minutes": [round(c.training.get("seconds", 0) / 60, 1) for c in cards]},
            "hyperparameters_from": first.training.get("hyperparameters_from"),
            "data_dir": Path(data_dir).name,
            "split": first.training["split"],
            "counts": first.training["counts"],
            "epochs_run": first.training.get("epochs_run"),
            "best_epoch": first.training.get("best_epoch"),
            "epoch_chosen_by": first.training.get("epoch_chosen_by"),
            "seconds": round(sum(c.training.get("seconds", 0) for c in cards), 1),
            "deterministic": all(c.training.get("deterministic") for c in cards),
            "strategy": first.training.get("strategy"),
            "hardware": hardware(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        validation=evaluation.card_summary(validation),
    )


def write(model: keras.Model, card: ModelCard, validation: dict, first: Predictor,
          models_dir: Path | None, log) -> ModelCard:
    """Save the ensemble's Keras file, ONNX export, card and validation report, and report its ECE."""
    from core.learning import export, keras_model

    card = export.export(model, keras_model.save(model, card, models_dir), models_dir)
    registry.save_report(card.name, "validation",
                         {"model": card.name, "split": "validation (patient-level)", **validation}, models_dir)
    history = registry.load_report(first.name, "history", first.directory)
    if history:  # the training curves shown for an ensemble are its first member's, as `train --ensemble` does
        registry.save_report(card.name, "history", history, models_dir)
    for fit, eces in validation["ece_under_shift_held_out"].items():
        log(f"ECE on held-out patients, calibration {fit}: plain {eces['none']:.4f}, "
            f"worst under shift {max(eces.values()):.4f}")
    log(f"saved {card.file} and {card.onnx['file']}: "
        f"validation AUC {validation['auc']:.4f}, ECE {validation['ece']:.4f}")
    return card


def assemble(members: list[tuple[str, Path | None]], name: str, data_dir: Path,
             models_dir: Path | None = None, log=print) -> ModelCard:
    """Write NAME: the logit average of the named trained files, each calibrated under shift first."""
    predictors = load_members(members)
    scores = score_validation(predictors, data_dir, log)
    calibrations = calibrate_members(scores)
    by_shift = averaged(scores, calibrations)
    model = build_network(members, name, calibrations)
    served = verified_outputs(model, predictors[0], scores, by_shift["none"])
    calibration, points, validation = evidence_under_shift(scores, served, by_shift)
    card = ensemble_card(name, [p.card for p in predictors], model, calibrations, calibration, points, validation,
                         data_dir)
    return write(model, card, validation, predictors[0], models_dir, log)
