"""Batch screening: many files in, one row each out; a bad file never stops the batch."""
from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from core.serving.imaging import MAX_FILE_BYTES, ImageError
from core.serving.predictor import Predictor, ScreeningResult
from core.serving.quality import NotChestXRayError, light_on_film
from core.serving.settings import CLASS_NAMES, DEFAULT_OPERATING_POINT, IMAGE_SUFFIXES

# Every row says which threshold, model file and site profile gave its label, and carries what site
# calibration needs (the image's sha256 and the model's raw output, never pixels), with two columns
# left blank for the clinic: the diagnosis when it is known, and the patient (core.analysis.site_calibration).
LABEL_FIELDS = ("diagnosis", "patient")
ROW_FIELDS = ("file", "status", "input_kind", "probability", "label", "operating_point", "threshold", "model",
              "model_sha256", "site", "message", "image_sha256", "raw_output", "raw_recipe", *LABEL_FIELDS)


def _from_result(name: str) -> property:
    return property(lambda row: getattr(row.result, name) if row.result else None)


@dataclass
class ScreeningRow:
    """One line of a batch report. ``status`` is ok, rejected (not screenable) or error;
    what a screened image got is read from its result."""

    file: str
    status: str
    model: str | None = None
    message: str = ""
    result: ScreeningResult | None = None
    refused_kind: str | None = None  # for a refused file that decoded: what it was (a photo, ...)

    @property
    def probability(self) -> float | None:
        return round(self.result.probability, 6) if self.result else None

    # What a screened image got, read from its result (None for a refused or unreadable file).
    label = _from_result("label")
    operating_point = _from_result("operating_point")
    threshold = _from_result("threshold")
    model_sha256 = _from_result("model_sha256")
    site = _from_result("site")
    image_sha256 = _from_result("image_sha256")
    raw_output = _from_result("raw_output")
    raw_recipe = _from_result("raw_recipe")
    diagnosis = patient = None  # the clinic's to fill in the downloaded file

    @property
    def input_kind(self) -> str | None:
        return self.result.input_kind if self.result else self.refused_kind

    @property
    def flagged(self) -> bool:
        return self.label == CLASS_NAMES[1]

    @property
    def retake_first(self) -> bool:
        """Flagged, but a photo with light on the film (core.serving.quality.RETAKE_BEFORE_REFERRAL):
        taken again before a referral."""
        return self.flagged and bool(light_on_film(self.result.warnings))

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in ROW_FIELDS}

    def rescored(self, predictor: Predictor, operating_point: str) -> ScreeningRow:
        """This row at the predictor's calibration and operating point (a site profile's), from its raw
        output: no forward pass. ValueError for a row of another model file."""
        return replace(self, result=predictor.rescore(self.result, operating_point)) if self.result else self


@dataclass(frozen=True)
class Refusal:
    """Why one file was not screened: ``status`` rejected (not a chest X-ray) or error (not
    readable or decodable), the reason for a person, and what the file was when it decoded."""

    status: str
    reason: str
    input_kind: str | None = None


def refusal(exc: Exception) -> Refusal:
    """The one mapping from what screening a file raised to its row's reason: every batch, the
    archive job's engines included, gives the same words for the same fault."""
    if isinstance(exc, NotChestXRayError):
        return Refusal("rejected", str(exc), exc.input_kind)
    if isinstance(exc, ImageError):
        return Refusal("error", str(exc), exc.input_kind)
    if isinstance(exc, OSError):
        return Refusal("error", f"cannot be read ({exc.strerror or type(exc).__name__})")
    return Refusal("error", f"could not be screened ({type(exc).__name__})")


def screen_bytes(predictor: Predictor, name: str, data: bytes, operating_point: str = DEFAULT_OPERATING_POINT,
                 heatmap: bool = False) -> ScreeningRow:
    """Screen one named upload; every failure becomes a row with a readable message."""
    try:
        result = predictor.screen(data, operating_point, heatmap=heatmap)
    except Exception as exc:  # noqa: BLE001  never a traceback for a user; the reason is kept
        refused = refusal(exc)
        return ScreeningRow(name, refused.status, predictor.name, refused.reason, refused_kind=refused.input_kind)
    return ScreeningRow(name, "ok", predictor.name, "; ".join(result.warnings), result)


@dataclass
class Triage:
    """A batch in the order a health worker acts on it: flagged images (most likely first),
    then the ones that could not be screened, then the rest."""

    flagged: list[ScreeningRow]
    refused: list[ScreeningRow]
    clear: list[ScreeningRow]

    @classmethod
    def of(cls, rows: list[ScreeningRow]) -> Triage:
        screened = [r for r in rows if r.status == "ok"]
        return cls(sorted((r for r in screened if r.flagged), key=lambda r: -r.probability),
                   [r for r in rows if r.status != "ok"], [r for r in screened if not r.flagged])

    @property
    def ordered(self) -> list[ScreeningRow]:
        return self.flagged + self.refused + self.clear

    def summary(self) -> str:
        """ "3 of 40 flagged for clinical review (1 of them a photo with light on the film: take it again
        first), 1 refused, 2 with image-quality warnings" (Markdown)."""
        total = len(self.ordered)
        unreliable = sum(1 for r in self.flagged + self.clear if r.result.warnings)
        retakes = sum(r.retake_first for r in self.flagged)
        text = f"**{len(self.flagged)} of {total} flagged** for clinical review"
        if retakes:
            one, every = retakes == 1, retakes == len(self.flagged)
            which = "" if one and every else "all " if every else f"{retakes} of them "
            text += (f" ({which}{'a photo' if one else 'photos'} with light on the film: "
                     f"take {'it' if one else 'them'} again first)")
        text += f", {len(self.refused)} refused" if self.refused else ""
        return text + (f", {unreliable} with image-quality warnings" if unreliable else "")


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as the image files inside them (recursively, sorted)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def read_file(path: Path) -> bytes:
    """The file's bytes, refusing what is missing or too large before reading it. Sized on the
    open file and read no further than the limit: a file that grows while a job runs is still refused."""
    too_large = ImageError(f"the file is larger than the {MAX_FILE_BYTES // 2**20} MB limit")
    try:
        # Not blocking: a pipe or a device listed as a file must not hang a job.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise ImageError("not a regular file")
            if status.st_size > MAX_FILE_BYTES:
                raise too_large
            data = handle.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ImageError("no such file") from None
    if len(data) > MAX_FILE_BYTES:
        raise too_large
    return data


def screen_paths(predictor: Predictor, paths: Iterable[str | Path], operating_point: str = DEFAULT_OPERATING_POINT,
                 heatmaps: bool = False) -> list[ScreeningRow]:
    rows = []
    for path in expand_paths(paths):
        try:
            data = read_file(path)
        except (ImageError, OSError) as exc:
            rows.append(ScreeningRow(str(path), "error", predictor.name, refusal(exc).reason))
            continue
        rows.append(screen_bytes(predictor, str(path), data, operating_point, heatmaps))
    return rows


def rows_to_csv(rows: list[ScreeningRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS)
    writer.writeheader()
    writer.writerows(row.to_dict() for row in rows)
    return buffer.getvalue()


def rows_to_json(rows: list[ScreeningRow]) -> str:
    return json.dumps([row.to_dict() for row in rows], indent=1)
