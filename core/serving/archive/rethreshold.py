"""An archive job's rows at a site profile's points, from their stored raw outputs: no forward pass.

``core screen --rethreshold DIR --site SITE.json --out NEW`` writes NEW as the job that screening
SRC with that profile would have made: each row's probability is the profile's calibration of the
row's raw output, its label and threshold the profile's operating point. NEW is a folder of its own,
so that no folder ever holds rows at two thresholds; ``core screen SRC --out NEW --site SITE.json
--resume`` continues it with the files added to SRC since.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.serving import registry
from core.serving.archive import job, local, store
from core.serving.archive.parts import write_part
from core.serving.archive.screener import raw_digest, scoring_digest
from core.serving.calibration import apply_calibration
from core.serving.errors import JobError
from core.serving.predictor import Predictor
from core.serving.settings import CLASS_NAMES
from core.serving.site import SiteProfile, SiteProfileError

ENGINE = "rethreshold"  # the run record's engine: rows rescored, not screened


def _job_record(src: Path) -> dict:
    """The job's identity as its runs recorded it (every run of one folder is the same job)."""
    records = [store.info(run) for run in store.runs(src)]
    if not records:
        raise JobError(f"{src} holds no archive job's rows: give the --out DIR of an earlier `core screen` job")
    return {key: records[0].get(key) for key in job.IDENTITY}


def rethreshold(src: Path, out: Path, site: SiteProfile, site_bytes: bytes, operating_point: str) -> job.JobSummary:
    """The rows of the job in src at the site profile's points, written as a new job in out."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if src == out:
        raise JobError("--out must be another folder than the rethresholded one: one folder never holds rows at "
                       "two thresholds")
    with store.locked(src):  # not while a job still adds rows to it
        record = _job_record(src)
        rows = store.read_results(src)
    try:
        card = registry.load_card(record["model"])
        site.check_model(card)
    except (FileNotFoundError, SiteProfileError, ValueError) as exc:
        raise JobError(str(exc)) from None
    # A predictor without a network: its calibration, points and digests only; no model is run.
    predictor = Predictor(None, card, site=site)
    if operating_point not in predictor.operating_points:
        raise JobError(f"unknown operating point '{operating_point}'; choose from {', '.join(predictor.operating_points)}")
    held = set(rows.column("model_sha256").drop_null().to_pylist()) | {record["model_sha256"]}
    if held != {card.sha256} or record["raw_scoring"] != raw_digest(predictor):
        raise JobError(f"the rows in {src} were screened with another file, zooms or decoding of {card.name} than "
                       f"site profile '{site.name}' was made for (sha256 {card.sha256[:12]}…): screen SRC again with "
                       "--site")
    threshold = float(predictor.operating_points[operating_point])
    wanted = {**record, "scoring": scoring_digest(predictor), "threshold": threshold, "site": site.name,
              "site_sha256": hashlib.sha256(site_bytes).hexdigest(), "operating_point": operating_point}
    started = time.perf_counter()
    rescored = rescore(rows, predictor, operating_point)
    with store.locked(out):
        if store.runs(out):
            raise JobError(f"{out} already holds results: rethreshold into a new folder")
        run = store.new_run(out, {"engine": ENGINE, "rethresholded_from": str(src), **wanted})
        for index, start in enumerate(range(0, rescored.num_rows, local.ROWS_PER_PART)):
            write_part(rescored.slice(start, local.ROWS_PER_PART), run, index, record["format"])
        summary = job.summarise(rescored, 0, time.perf_counter() - started, run, [], 0)
        store.finish(run, asdict(summary))
    return summary


def rescore(rows: pa.Table, predictor: Predictor, operating_point: str) -> pa.Table:
    """Rows at the predictor's calibration and operating point, from their raw outputs; a refused
    row (no raw output) stays as it was."""
    raw = rows.column("raw_output").to_numpy(zero_copy_only=False).astype(np.float64)  # null -> nan
    screened = ~np.isnan(raw)
    probability = np.full(len(raw), np.nan)
    probability[screened] = apply_calibration(raw[screened], predictor.calibration)
    threshold = float(predictor.operating_points[operating_point])
    label = np.where(probability >= threshold, CLASS_NAMES[1], CLASS_NAMES[0])
    replaced = {"probability": pa.array(probability, mask=~screened),
                "label": pa.array(label, mask=~screened),
                "threshold": pa.array(np.full(len(raw), threshold)),
                "operating_point": pa.array([operating_point] * len(raw), pa.string()),
                "site": pa.array([predictor.site.name if predictor.site else None] * len(raw), pa.string())}
    for name, values in replaced.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, values.cast(rows.schema.field(name).type))
    return rows
