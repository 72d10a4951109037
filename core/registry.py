"""The model registry: ``models/`` holds each ``NAME.keras`` beside its card ``NAME.json``,
and ``manifest.json`` names the models and the default one.

A model file is only loaded when its sha256 matches its card, and always with
``safe_mode=True``, so a swapped or tampered file is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras

import core.zoo  # noqa: F401  registers the custom layers that model files refer to
from core.data import PROJECT_ROOT

MODELS_ENV = "CXR_MODELS_DIR"
MANIFEST = "manifest.json"
PROFILE = "dataset_profile.json"
BENCHMARK = "bench.json"


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


def load_card(name: str, directory: Path | None = None) -> dict:
    path = (directory or models_dir()) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no model card for '{name}' in {path.parent}")
    return _read_json(path)


def update_card(name: str, section: str, value, directory: Path | None = None) -> dict:
    """Add or replace one section of a card (the model file, and so its hash, is untouched)."""
    card = {**load_card(name, directory), section: value}
    _write_json((directory or models_dir()) / f"{name}.json", card)
    return card


def cards(directory: Path | None = None) -> list[dict]:
    return [load_card(name, directory) for name in model_names(directory)]


def load_model(name: str, directory: Path | None = None) -> tuple[keras.Model, dict]:
    """The model and its card, after checking the file against the card's hash."""
    directory = directory or models_dir()
    card = load_card(name, directory)
    path = directory / card["file"]
    actual = sha256_of(path)
    if actual != card["sha256"]:
        raise ModelIntegrityError(
            f"model file {card['file']} does not match its card (sha256 {actual[:12]}… "
            f"instead of {card['sha256'][:12]}…): refusing to load it")
    return keras.saving.load_model(path, compile=False, safe_mode=True), card


def save_model(model: keras.Model, card: dict, directory: Path | None = None) -> dict:
    """Write NAME.keras (weights only, no optimizer state) and its card; list it in the manifest."""
    directory = directory or models_dir()
    directory.mkdir(parents=True, exist_ok=True)
    name = card["name"]
    path = directory / f"{name}.keras"
    # A fresh, uncompiled copy drops the optimizer state, two thirds of the file
    # (clone_model would keep the optimizer; from_config does not).
    inference = keras.Model.from_config(model.get_config())
    inference.set_weights(model.get_weights())
    inference.save(path)
    card = {**card, "file": path.name, "file_bytes": path.stat().st_size, "sha256": sha256_of(path)}
    _write_json(directory / f"{name}.json", card)
    update_manifest(directory)
    return card


def _current_shift_auc(name: str, card: dict, directory: Path) -> float | None:
    """Mean AUC of the model's shift check, if that check was run on this very file."""
    report = load_report(name, "shift", directory)
    if not report or report.get("sha256") != card.get("sha256"):
        return None
    return report["summary"]["mean_auc"]


def update_manifest(directory: Path | None = None) -> dict:
    """List every carded model; the default is the one that holds up best on other machines'
    images: the best mean AUC of the acquisition-shift check when every model has a current
    one (benchmarks/shift.py), else the best validation AUC."""
    directory = directory or models_dir()
    found = sorted(p.stem for p in directory.glob("*.keras") if (directory / f"{p.stem}.json").exists())
    cards_found = {n: load_card(n, directory) for n in found}
    scores = {n: _current_shift_auc(n, card, directory) for n, card in cards_found.items()}
    if None in scores.values():
        scores = {n: card.get("validation", {}).get("auc", 0.0) for n, card in cards_found.items()}
    value = {"default": max(found, key=lambda n: scores[n]) if found else None, "models": found}
    _write_json(directory / MANIFEST, value)
    return value


def load_detector(directory: Path | None = None):
    """The fitted not-a-chest-X-ray detector of this models folder, or None."""
    from core.quality import DETECTOR_FILE, XrayDetector

    path = (directory or models_dir()) / DETECTOR_FILE
    return XrayDetector.load(path) if path.exists() else None


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
