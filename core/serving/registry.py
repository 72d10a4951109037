"""The model registry: ``models/`` holds each ``NAME.keras`` (training, analysis) and
``NAME.onnx`` (screening) beside its card ``NAME.json``; ``manifest.json`` names the
models and the default one.

A model file is only loaded when its sha256 matches its card, so a swapped or
tampered file is refused. No TensorFlow here: Keras files are loaded by
``core.learning.keras_model``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from core.serving.card import ModelCard
from core.serving.quality import DETECTOR_FILE, XrayDetector
from core.serving.settings import PROJECT_ROOT

MODELS_ENV = "CXR_MODELS_DIR"
MANIFEST = "manifest.json"
# The default-model rule (docs/model-history.md, fixed 2026-12-01). Figures of merit closer than
# this are a tie: two initialisations of one recipe differ by 0.007 in the best specificity at
# sensitivity 0.98 under the lung-field crops.
RANKING_NOISE = 0.01
# What the manifest says of how its default was chosen; the Home page shows it.
DEFAULT_RULE = {"rule": "docs/model-history.md, 'The rule that picks the default'", "fixed": "2026-12-01",
                "reads": "the validation split and the acquisition-shift check only",
                "known_when_fixed": "the withheld-split figures of the 14 models shipped at commit 7d61d34 "
                                    "(acceptance check of 2026-12-01, in external_checks.json)"}
# A default must screen one X-ray, bytes to result, within this (core bench, ONNX Runtime, 2 cores).
LATENCY_BOUND_MS = 40.0
PROFILE = "dataset_profile.json"
BENCHMARK = "bench.json"
EXTERNAL_CHECKS = "external_checks.json"


class ModelIntegrityError(RuntimeError):
    """A model file that does not match its card."""


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV, PROJECT_ROOT / "models"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=False) + "\n")


def manifest(directory: Path | None = None) -> dict:
    path = (directory or models_dir()) / MANIFEST
    return _read_json(path) if path.exists() else {"default": None, "models": []}


def model_names(directory: Path | None = None) -> list[str]:
    return list(manifest(directory)["models"])


def default_model_name(directory: Path | None = None) -> str:
    name = manifest(directory)["default"]
    if not name:
        raise FileNotFoundError(f"no default model in {(directory or models_dir()) / MANIFEST}")
    return name


def load_card(name: str, directory: Path | None = None) -> ModelCard:
    path = (directory or models_dir()) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no model card for '{name}' in {path.parent}")
    return ModelCard.from_dict(_read_json(path))


def update_card(name: str, section: str, value, directory: Path | None = None) -> ModelCard:
    """Add or replace one section of a card (the model file, and so its hash, is untouched)."""
    card = load_card(name, directory).with_section(section, value)
    write_card(card, directory)
    return card


def cards(directory: Path | None = None) -> list[ModelCard]:
    return [load_card(name, directory) for name in model_names(directory)]


def verified_path(file: str, sha256: str, directory: Path | None = None) -> Path:
    """The path of a model file named in a card, after checking the file against the card's hash."""
    path = (directory or models_dir()) / file
    if not path.exists():
        raise FileNotFoundError(f"model file {file} is missing from {path.parent}")
    actual = sha256_of(path)
    if actual != sha256:
        raise ModelIntegrityError(
            f"model file {file} does not match its card (sha256 {actual[:12]}… "
            f"instead of {sha256[:12]}…): refusing to load it")
    return path


def write_card(card: ModelCard, directory: Path | None = None) -> None:
    _write_json((directory or models_dir()) / f"{card.name}.json", card.to_dict())


def _current_shift_scores(name: str, card: ModelCard, directory: Path) -> tuple[float, float] | None:
    """(best specificity at sensitivity 0.98, AUC), each the mean over the lung-field crops of the
    model's shift check, if that check was run on this very file."""
    report = load_report(name, "shift", directory)
    if not report or report.get("sha256") != card.sha256:
        return None
    # The lung-field crops imitate another period's framing; the mild shifts do not separate models.
    summary = report["summary"]
    return (summary.get("framing_mean_specificity_at_screening_sensitivity", 0.0),
            summary.get("framing_mean_auc", summary["mean_auc"]))


def _latency_ms(directory: Path) -> dict[str, float]:
    """Each model's bytes-to-result p50 on ONNX Runtime from the saved benchmark."""
    rows = (load_shared(BENCHMARK, directory) or {"rows": []})["rows"]
    return {row["model"]: row["p50_ms"] for row in rows if row["runtime"] == "onnx"}


def update_manifest(directory: Path | None = None) -> dict:
    """List every carded model and choose the default by the rule in docs/model-history.md:
    among the models with a shift check of their current file and within LATENCY_BOUND_MS, the
    best specificity at sensitivity 0.98 under the lung-field crops (the screening target with the
    validation threshold's sampling noise taken out); within RANKING_NOISE of the best, the best
    AUC there. With no current shift check, the best validation AUC: validation is saturated and
    would pick a model that generalises worse, so a new file waits for its check."""
    directory = directory or models_dir()
    found = sorted(p.stem for p in directory.glob("*.keras") if (directory / f"{p.stem}.json").exists())
    cards_found = {n: load_card(n, directory) for n in found}
    latency = _latency_ms(directory)
    fast_enough = [n for n in found if latency.get(n, 0.0) <= LATENCY_BOUND_MS]
    checked = {n: _current_shift_scores(n, cards_found[n], directory) for n in fast_enough}
    scores = {n: score for n, score in checked.items() if score is not None}
    if not scores:
        scores = {n: (cards_found[n].validation.get("auc", 0.0), 0.0) for n in fast_enough}
    best = max((merit for merit, _ in scores.values()), default=None)
    tied = [n for n in scores if scores[n][0] >= best - RANKING_NOISE]
    value = {"default": max(tied, key=lambda n: scores[n][1]) if tied else None, "models": found,
             "chosen_by": DEFAULT_RULE}
    _write_json(directory / MANIFEST, value)
    return value


def load_detector(directory: Path | None = None) -> XrayDetector | None:
    """The fitted not-a-chest-X-ray detector of this models folder, or None: one object per version of
    its file, so that decoding (core.serving.imaging) and screening share it and its measures."""
    path = (directory or models_dir()) / DETECTOR_FILE
    return _detector_at(path, path.stat().st_mtime_ns) if path.exists() else None


@functools.lru_cache(maxsize=8)
def _detector_at(path: Path, modified_ns: int) -> XrayDetector:
    return XrayDetector.load(path)


def save_report(name: str, kind: str, value, directory: Path | None = None) -> Path:
    """A JSON report beside a model: ``NAME.KIND.json`` (validation, history, explain…)."""
    path = (directory or models_dir()) / f"{name}.{kind}.json"
    _write_json(path, value)
    return path


def load_report(name: str, kind: str, directory: Path | None = None):
    path = (directory or models_dir()) / f"{name}.{kind}.json"
    return _read_json(path) if path.exists() else None


def save_shared(file_name: str, value, directory: Path | None = None) -> None:
    """A JSON file about all models together (PROFILE, BENCHMARK)."""
    _write_json((directory or models_dir()) / file_name, value)


def load_shared(file_name: str, directory: Path | None = None):
    path = (directory or models_dir()) / file_name
    return _read_json(path) if path.exists() else None


def external_checks(name: str, directory: Path | None = None) -> list[dict]:
    """Independent checks (another hospital or period) of any file of this model, newest first;
    a check's sha256 says which file it measured."""
    return _newest_checks(lambda c: c["model"] == name, directory)


def previous_default_checks(directory: Path | None = None) -> list[dict]:
    """Independent checks of files that were the default model when they were checked, newest first:
    what a newly trained default's quality elsewhere is to be compared with."""
    return _newest_checks(lambda c: c.get("default_then", False), directory)


def _newest_checks(keep: Callable[[dict], bool], directory: Path | None) -> list[dict]:
    checks = (load_shared(EXTERNAL_CHECKS, directory) or {"checks": []})["checks"]
    return sorted(filter(keep, checks), key=lambda c: c["date"], reverse=True)
