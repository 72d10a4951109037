"""An archive job's rows at a site profile's points, from their stored raw outputs: no forward pass.

``core screen --rethreshold DIR --site SITE.json --out NEW`` writes NEW as the job that screening
SRC with that profile would have made: each row's probability is the profile's calibration of the
row's raw output, its label and threshold the profile's operating point. NEW is a folder of its own,
so that no folder ever holds rows at two thresholds; ``core screen SRC --out NEW --site SITE.json
--resume`` continues it with the files added to SRC since.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.serving import registry
from core.serving.archive import job, local, store
from core.serving.archive.parts import write_part
from core.serving.archive.screener import scoring_digest
from core.serving.errors import JobError
from core.serving.predictor import Predictor
from core.serving.site import SiteProfile, SiteProfileError

ENGINE = "rethreshold"  # the run record's engine: rows rescored, not screened


def _job_rows(src: Path) -> tuple[dict, pa.Table]:
    """(the job's identity as its runs recorded it, its rows that count), refused unless every run
    with a record is of one job and each file has one row (a run without a record vouches for none
    of its rows, which are left out: screening into the new folder with --resume adds their files)."""
    with store.reading(src):  # not while a job still adds rows to it
        recorded = [run for run in store.runs(src) if store.info(run) is not None]
        if not recorded:
            raise JobError(f"{src} holds no archive job's rows: give the --out DIR of an earlier `core screen` job")
        identities = {json.dumps({key: store.info(run).get(key) for key in job.IDENTITY}, sort_keys=True)
                      for run in recorded}
        rows = store.read_results(src)
    if len(identities) > 1:
        raise JobError(f"{src} holds runs of more than one job: rethreshold only a folder of one job")
    if len(set(rows.column("path").to_pylist())) != rows.num_rows:
        raise JobError(f"{src} holds more than one row for some files (an interrupted run not yet sealed): "
                       "resume its job first (`core screen SRC --out DIR --resume`)")
    return json.loads(identities.pop()), rows


def rethreshold(src: Path, out: Path, site: SiteProfile, site_bytes: bytes, operating_point: str) -> job.JobSummary:
    """The rows of the job in src at the site profile's points, written as a new job in out."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if src == out:
        raise JobError("--out must be another folder than the rethresholded one: one folder never holds rows at "
                       "two thresholds")
    record, rows = _job_rows(src)
    if not record.get("raw_recipe"):
        raise JobError(f"the rows in {src} were written by an older version without the model's raw outputs: "
                       "screen SRC again with --site")
    try:
        card = registry.load_card(record["model"])
        # A predictor without a network: its calibration, points and digests only; no model is run.
        predictor = Predictor(None, card).with_site(site)
    except (FileNotFoundError, SiteProfileError, ValueError) as exc:
        raise JobError(str(exc)) from None
    if operating_point not in predictor.operating_points:
        raise JobError(f"unknown operating point '{operating_point}'; choose from {', '.join(predictor.operating_points)}")
    held = set(rows.column("model_sha256").drop_null().to_pylist()) | {record["model_sha256"]}
    recipes = set(rows.column("raw_recipe").drop_null().to_pylist()) | {record["raw_recipe"]}
    if held != {card.sha256} or recipes != {predictor.raw_recipe}:
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
    probability[screened] = predictor.calibrated(raw[screened])
    threshold = float(predictor.operating_points[operating_point])
    label = [predictor.label_for(p, operating_point) if ok else None for p, ok in zip(probability, screened)]
    replaced = {"probability": pa.array(probability, mask=~screened),
                "label": pa.array(label, pa.string()),
                "threshold": pa.array(np.full(len(raw), threshold)),
                "operating_point": pa.array([operating_point] * len(raw), pa.string()),
                "site": pa.array([predictor.site.name if predictor.site else None] * len(raw), pa.string())}
    for name, values in replaced.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, values.cast(rows.schema.field(name).type))
    return rows
