"""Reports on a data set folder: evaluation, top losses and the lung-focus report."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.analysis import data, evaluation, explain
from core.serving import registry
from core.serving.framing import FrameBox
from core.serving.predictor import Predictor

BATCH_SIZE = 64


@dataclass
class Scored:
    """A model's probabilities for the readable images of one split."""

    examples: list[data.Example]
    inputs: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    unreadable: list[tuple[str, str]]
    shapes: list[tuple[int, int]]  # of each decoded image
    frames: list[FrameBox]  # the part of each decoded image its input shows


def in_batches(score, inputs: np.ndarray) -> np.ndarray:
    """One probability per input, scored BATCH_SIZE at a time to bound memory."""
    return np.concatenate([score(inputs[i:i + BATCH_SIZE]) for i in range(0, len(inputs), BATCH_SIZE)]
                          or [np.zeros(0)])


def split_examples(data_dir, split: str, seed: int = 42) -> list[data.Example]:
    """A folder's split; "validation" is the patient-level hold-out of "train" that training used."""
    if split == "validation":
        return data.patient_split(data_dir, seed)[1]
    return data.list_examples(data_dir, split)


def score_split(predictor: Predictor, data_dir, split: str, progress=None) -> Scored:
    examples = split_examples(data_dir, split, predictor.card.split_seed)
    loaded = data.load_set(examples, predictor.spec, progress=progress)
    probabilities = in_batches(predictor.probabilities, loaded.inputs)
    return Scored(loaded.examples, loaded.inputs, loaded.labels, probabilities,
                  [(str(p), reason) for p, reason in loaded.errors], loaded.shapes, loaded.frames)


def evaluate(predictor: Predictor, scored: Scored, split: str, is_default: bool,
             include_predictions: bool = False) -> dict:
    """The evaluation record of one model on one split (see ``evaluation.report``)."""
    record = evaluation.report(scored.labels, scored.probabilities, predictor.operating_points, include_predictions)
    # A few hundred X-rays of another period are one draw of it: each point's 95% intervals over
    # resampled patients say how far a figure read against a target could move on another draw
    patients = [e.patient for e in scored.examples]
    for name, threshold in predictor.operating_points.items():
        record["operating_points"][name]["95ci"] = evaluation.bootstrap_intervals(
            scored.labels, scored.probabilities, threshold, patients)
    # The files measured, by hash: an independent check stands for these files only (core.analysis.checks)
    onnx = (predictor.card.onnx or {}).get("sha256") if predictor.runtime == "onnx" else None
    files = {"sha256": predictor.card.sha256, "onnx_sha256": onnx}
    return {"model": predictor.name, "default": is_default, "split": split, **files,
            "patients": len(set(patients)), **record, "unreadable": scored.unreadable}


def recalibrate(predictor: Predictor, data_dir, progress=None, directory=None) -> dict:
    """Refit calibration and operating points of a trained model on its validation split,
    as training does, and store them in its card and validation report."""
    seed = predictor.card.split_seed
    loaded = data.load_set(split_examples(data_dir, "validation", seed), predictor.spec, progress=progress)
    raw = in_batches(predictor.raw_probabilities, loaded.inputs)
    calibration, points, validation = evaluation.validation_evidence(
        loaded.labels, raw, [e.patient for e in loaded.examples])
    name = predictor.name
    for section, value in (("calibration", calibration), ("operating_points", points),
                           ("validation", evaluation.card_summary(validation))):
        card = registry.update_card(name, section, value, directory)
    registry.save_report(name, "validation", {"model": name, "split": "validation (patient-level)", **validation},
                         directory)
    return card


def top_losses(scored: Scored, count: int) -> list[dict]:
    """The images with the highest binary cross-entropy, worst first."""
    losses = evaluation.binary_cross_entropy(scored.labels, scored.probabilities)
    order = np.argsort(-losses, kind="stable")[:count]
    return [{"index": int(i), "file": str(scored.examples[i].path), "label": data.CLASS_NAMES[scored.labels[i]],
             "probability": float(scored.probabilities[i]), "loss": float(losses[i])} for i in order]


def lung_focus(predictor: Predictor, scored: Scored, limit: int | None = 200) -> dict:
    """Per class, the mean share of heat-map mass inside and outside the thorax box."""
    method = explain.method_for(predictor)
    chosen = np.arange(len(scored.labels))
    if limit and len(chosen) > limit:  # an even sample keeps the report quick on a CPU
        chosen = np.random.default_rng(0).choice(chosen, limit, replace=False)
    shares: dict[str, list[dict]] = {name: [] for name in data.CLASS_NAMES}
    blank = {name: 0 for name in data.CLASS_NAMES}
    for i in chosen:
        heat = explain.explain(predictor, scored.inputs[i], method)
        if predictor.spec.frame:  # the share inside the thorax box of the X-ray, not of the standard frame
            heat = scored.frames[i].place(heat, scored.shapes[i])
        name = data.CLASS_NAMES[scored.labels[i]]
        if heat.sum() <= 0:  # no evidence of pneumonia anywhere: nothing to place
            blank[name] += 1
            continue
        shares[name].append(explain.focus_shares(heat))
    summary = {
        name: {key: float(np.mean([s[key] for s in values])) if values else None
               for key in ("inside", "outside", "top_band")} | {"images": len(values), "blank_maps": blank[name]}
        for name, values in shares.items()
    }
    inside_area = float(explain.thorax_mask(100, 100).mean())
    return {"model": predictor.name, "method": method, "thorax_box": list(explain.THORAX_BOX),
            "thorax_area_share": inside_area, "classes": summary}
