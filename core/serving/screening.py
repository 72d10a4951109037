"""Batch screening: many files in, one row each out; a bad file never stops the batch."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from core.serving.imaging import MAX_FILE_BYTES, ImageError
from core.serving.predictor import Predictor, ScreeningResult
from core.serving.quality import NotChestXRayError
from core.serving.settings import DEFAULT_OPERATING_POINT, IMAGE_SUFFIXES

# Every row says which threshold, model file and site profile gave its label.
ROW_FIELDS = ("file", "status", "probability", "label", "operating_point", "threshold", "model", "model_sha256",
              "site", "message")


@dataclass
class ScreeningRow:
    """One line of a batch report. ``status`` is ok, rejected (not screenable) or error."""

    file: str
    status: str
    probability: float | None = None
    label: str | None = None
    operating_point: str | None = None
    threshold: float | None = None
    model: str | None = None
    model_sha256: str | None = None
    site: str | None = None
    message: str = ""
    result: ScreeningResult | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in ROW_FIELDS}


def screen_bytes(predictor: Predictor, name: str, data: bytes, operating_point: str = DEFAULT_OPERATING_POINT,
                 heatmap: bool = False) -> ScreeningRow:
    """Screen one named upload; every failure becomes a row with a readable message."""
    try:
        result = predictor.screen(data, operating_point, heatmap=heatmap)
    except NotChestXRayError as exc:
        return ScreeningRow(name, "rejected", model=predictor.name, message=str(exc))
    except ImageError as exc:
        return ScreeningRow(name, "error", model=predictor.name, message=str(exc))
    except Exception as exc:  # noqa: BLE001  never a traceback for a user; the reason is kept
        return ScreeningRow(name, "error", model=predictor.name,
                            message=f"could not be screened ({type(exc).__name__})")
    return ScreeningRow(name, "ok", round(result.probability, 6), result.label, operating_point,
                        result.threshold, predictor.name, result.model_sha256, result.site,
                        "; ".join(result.warnings), result)


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
    """The file's bytes, refusing what is missing or too large before reading it."""
    if not path.is_file():
        raise ImageError("no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"the file is larger than the {MAX_FILE_BYTES // 2**20} MB limit")
    return path.read_bytes()


def screen_paths(predictor: Predictor, paths: Iterable[str | Path], operating_point: str = DEFAULT_OPERATING_POINT,
                 heatmaps: bool = False) -> list[ScreeningRow]:
    rows = []
    for path in expand_paths(paths):
        try:
            data = read_file(path)
        except (ImageError, OSError) as exc:
            message = str(exc) if isinstance(exc, ImageError) else f"cannot be read ({exc.strerror})"
            rows.append(ScreeningRow(str(path), "error", model=predictor.name, message=message))
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
