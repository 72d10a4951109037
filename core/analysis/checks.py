"""Independent checks: evaluation records of another period or hospital, kept by model file.

``models/external_checks.json`` holds one check per evaluated file, keyed by the file's sha256:
a retrained model is a new file, and its predecessor's figures say nothing certain about it.
``python -m core record-check`` adds the records ``python -m core evaluate --json`` writes.
"""
from __future__ import annotations

from pathlib import Path

from core.analysis.evaluation import SCREENING_SENSITIVITY
from core.serving import registry
from core.serving.card import ModelCard

BEST_SPECIFICITY = f"best_specificity_at_sensitivity_{SCREENING_SENSITIVITY}"
# Splits that training saw, or whose patients it tuned on: never an independent check.
NOT_INDEPENDENT = ("train", "validation")
DIGITS = 3  # as the stored checks: a few hundred X-rays support no more


class CheckError(ValueError):
    """An evaluation record that cannot stand as an independent check."""


def _point(at: dict) -> dict:
    """One operating point's figures, with their 95% intervals over patients where measured."""
    point = {key: round(at[key], DIGITS) for key in ("threshold", "accuracy", "sensitivity", "specificity")}
    intervals = {key: [round(v, DIGITS) for v in at["95ci"][key]]
                 for key in ("sensitivity", "specificity") if key in (at.get("95ci") or {})}
    return point | ({"95ci": intervals} if intervals else {})


def describe_data(record: dict) -> str:
    """What the evaluated images were, from the record's own counts."""
    n, positives = record["n"], record["positives"]
    patients = f" of {record['patients']} patients" if "patients" in record else ""
    return f"{record['split']} split: {n} X-rays{patients} ({n - positives} NORMAL, {positives} PNEUMONIA)"


def check_from_record(record: dict, date: str, data: str | None = None, by: str | None = None) -> dict:
    """The stored check of one ``core evaluate --json`` record; refuses what is not independent."""
    if not record.get("sha256"):
        raise CheckError(f"the record of {record.get('model')} names no file sha256: evaluate it again")
    if record["split"] in NOT_INDEPENDENT:
        raise CheckError(f"the {record['split']} split of {record['model']} is not independent of its training")
    if record.get("site"):
        raise CheckError(f"{record['model']} was evaluated at site profile {record['site']}'s operating points, "
                         "not its own")
    points = record["operating_points"]
    auc_interval = (points["balanced"].get("95ci") or {}).get("auc")
    return {
        "model": record["model"], "sha256": record["sha256"],
        **({"onnx_sha256": record["onnx_sha256"]} if record.get("onnx_sha256") else {}),
        "date": date, "data": data or describe_data(record),
        "by": by or f"python -m core evaluate --split {record['split']}",
        "auc": round(record["auc"], DIGITS),
        **({"auc_95ci": [round(v, DIGITS) for v in auc_interval]} if auc_interval else {}),
        "balanced": _point(points["balanced"]), "screening": _point(points["screening"]),
        BEST_SPECIFICITY: round(record["specificity_at_screening_sensitivity"], DIGITS),
        "ece": round(record["ece"], DIGITS),
        "default_then": bool(record.get("default")),
    }


def record_checks(records: list[dict], date: str, data: str | None = None, by: str | None = None,
                  directory: Path | None = None) -> list[dict]:
    """Add each record's check to external_checks.json; a check of the same file, date and data
    replaces the one stored (a rerun), any other is kept. Returns the checks added."""
    added = [check_from_record(record, date, data, by) for record in records]
    stored = registry.load_shared(registry.EXTERNAL_CHECKS, directory) or {"checks": []}
    same = {(c["sha256"], c["date"], c["data"]) for c in added}
    kept = [c for c in stored["checks"] if (c["sha256"], c["date"], c["data"]) not in same]
    registry.save_shared(registry.EXTERNAL_CHECKS, {**stored, "checks": kept + added}, directory)
    return added


def measures(check: dict, card: ModelCard) -> bool:
    """Whether a check measured this card's files: its Keras file, and its ONNX export where recorded."""
    onnx = check.get("onnx_sha256")
    return check["sha256"] == card.sha256 and (onnx is None or onnx == (card.onnx or {}).get("sha256"))


def current_check(card: ModelCard, directory: Path | None = None) -> tuple[str, dict | None]:
    """("checked", the newest check of this very file), ("an earlier file", None) where only other
    files of the model were checked, or ("not checked", None)."""
    checks = registry.external_checks(card.name, directory)
    own = [c for c in checks if measures(c, card)]
    if own:
        return "checked", own[0]
    return ("an earlier file" if checks else "not checked"), None
