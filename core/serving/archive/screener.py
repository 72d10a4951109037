"""Screening a batch of an archive's files into rows, with the driver's exact model."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.serving.archive.rows import COLUMNS
from core.serving.errors import JobError
from core.serving.predictor import Predictor
from core.serving.screening import read_file, refusal
from core.serving.settings import DEFAULT_OPERATING_POINT
from core.serving.site import SiteProfile, SiteProfileError

# Images per forward pass, each at every test-time zoom. A pass's activations scale with it: 32
# images at three zooms took a Ray worker from 350 to 500 MB, 8 to 370 MB; 8 cost less CPU per image too
# (4.1 ms against 5.0 ms on one thread), as the activations stay in cache.
FORWARD_CHUNK = 8


@dataclass(frozen=True)
class JobSpec:
    """What every worker needs to screen as the driver does (small and picklable for Ray)."""

    model: str | None = None  # default: the manifest's default
    models_dir: str | None = None
    site_profile: bytes | None = None  # the profile file's bytes, so a cluster's workers need no copy
    site_name: str = ""
    operating_point: str = DEFAULT_OPERATING_POINT
    # The model the driver checked: its files by sha256 (the card's and its ONNX export's) and what
    # it scores with (calibration, test-time zooms, thresholds, decoding: scoring_digest). A worker
    # that finds anything else under the same name refuses to screen, so every row has one model.
    model_sha256: str | None = None
    onnx_sha256: str | None = None
    scoring: str | None = None

    @property
    def site_sha256(self) -> str | None:
        return hashlib.sha256(self.site_profile).hexdigest() if self.site_profile else None

    def predictor(self, threads: int | None = None) -> Predictor:
        """The job's model at its site's points, hash-checked; JobError for any that does not fit."""
        try:
            site = SiteProfile.from_bytes(self.site_profile, self.site_name) if self.site_profile else None
            predictor = Predictor.load(self.model, Path(self.models_dir) if self.models_dir else None, site=site,
                                       threads=threads)
        except (FileNotFoundError, SiteProfileError, ValueError, RuntimeError) as exc:
            raise JobError(str(exc)) from None
        if self.operating_point not in predictor.operating_points:
            raise JobError(f"unknown operating point '{self.operating_point}'; "
                           f"choose from {', '.join(predictor.operating_points)}")
        onnx = (predictor.card.onnx or {}).get("sha256")
        found = (predictor.card.sha256, onnx, scoring_digest(predictor))
        if self.model_sha256 and found != (self.model_sha256, self.onnx_sha256, self.scoring):
            raise JobError(f"this worker's {predictor.name} is another file or card (sha256 "
                           f"{predictor.card.sha256[:12]}…) than the job's ({self.model_sha256[:12]}…): "
                           "give every node the same models folder and code")
        return predictor

    def pinned(self, predictor: Predictor) -> JobSpec:
        """This spec naming the driver's loaded model exactly, for workers to load and check."""
        return JobSpec(predictor.name, self.models_dir, self.site_profile, self.site_name, self.operating_point,
                       predictor.card.sha256, (predictor.card.onnx or {}).get("sha256"), scoring_digest(predictor))


def scoring_digest(predictor: Predictor) -> str:
    """What turns a file into a row: the raw output's recipe, then the calibration and thresholds
    (`core calibrate` rewrites them in the card, leaving the file and its hash alone)."""
    scoring = {"raw": predictor.raw_recipe, "calibration": predictor.calibration,
               "operating_points": predictor.operating_points}
    return hashlib.sha256(json.dumps(scoring, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Prepared:
    """One file before the forward pass: its row's key and kind, its model input (None when it
    cannot be screened), its quality warnings and its error."""

    key: str
    input_kind: str | None
    tensor: np.ndarray | None
    warnings: str
    error: str
    image_sha256: str | None = None  # of the file's bytes, when they were read


class ArchiveScreener:
    """Screens batches of files into rows; holds one Predictor, loaded once (per Ray actor).

    ``screen`` reads each file of a batch itself, so a file deleted, unreadable or too large becomes
    a row with its reason, and gives one row per file as a list per column (plain values, so a
    Ray actor needs no pyarrow)."""

    def __init__(self, spec: JobSpec, threads: int | None = None, predictor: Predictor | None = None):
        self.spec = spec
        # The driver passes the Predictor it has already loaded and checked; a Ray actor loads its own.
        self.predictor = predictor or spec.predictor(threads)

    def prepare(self, path: str | Path, key: str) -> Prepared:
        """One file read and ready for the forward pass, or its reason."""
        digest = None
        try:
            data = read_file(Path(path))
            digest = hashlib.sha256(data).hexdigest()
            loaded, _, warnings = self.predictor.prepare(data)
            return Prepared(key, loaded.decoded.input_kind, loaded.tensor, "; ".join(warnings), "", digest)
        except Exception as exc:  # noqa: BLE001  one odd file never stops the job; the reason is kept
            refused = refusal(exc)
            return Prepared(key, refused.input_kind, None, "", refused.reason, digest)

    def rows(self, prepared: list[Prepared]) -> dict[str, list]:
        """The forward pass over the prepared inputs in one batch, and a row for every file."""
        predictor = self.predictor
        good = [i for i, item in enumerate(prepared) if item.tensor is not None]
        raw = {}
        for start in range(0, len(good), FORWARD_CHUNK):
            chunk = good[start:start + FORWARD_CHUNK]
            raw.update(zip(chunk, predictor.raw_probabilities(np.stack([prepared[i].tensor for i in chunk]))))
        probabilities = dict(zip(raw, predictor.calibrated(np.array(list(raw.values())))))
        threshold = float(predictor.operating_points[self.spec.operating_point])
        site = predictor.site.name if predictor.site else None
        recipe = predictor.raw_recipe  # a digest: made once a batch, not once a row
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        for i, item in enumerate(prepared):
            probability = float(probabilities[i]) if i in probabilities else None
            values = {"path": item.key, "input_kind": item.input_kind, "probability": probability,
                      "operating_point": self.spec.operating_point,
                      "label": predictor.label_for(probability, self.spec.operating_point) if probability is not None
                      else None,
                      "threshold": threshold, "model": predictor.name, "model_sha256": predictor.card.sha256,
                      "site": site, "warnings": item.warnings or None, "error": item.error or None,
                      "image_sha256": item.image_sha256, "raw_output": float(raw[i]) if i in raw else None,
                      "raw_recipe": recipe,
                      "diagnosis": None, "patient": None}
            for name in COLUMNS:
                columns[name].append(values[name])
        return columns

    def screen(self, batch: list[tuple[str, str]]) -> dict[str, list]:
        """The rows of a batch of (resolved path, row key)."""
        return self.rows([self.prepare(path, key) for path, key in batch])
