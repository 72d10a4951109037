"""Screening an archive: one row per file, on this machine or on a Ray cluster, resumable.

A job reads every image file under a source folder (or those a manifest lists), screens each
as ``Predictor.screen`` does, and writes one row per file into part files under an output
folder. Each run writes into its own ``run-…`` subfolder and marks its completion there.
A part file counts only when it is whole: the local engine renames each part into place once
written; a Ray run's Parquet parts are whole when their footer reads, and its CSV parts only
once the run is marked complete. ``resume`` screens only the paths that no whole part holds,
and sets aside the rest of an interrupted run (renamed with a leading underscore, which
Parquet and Arrow readers skip), so that no path is ever counted twice.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.serving.errors import ImageError
from core.serving.predictor import Predictor
from core.serving.screening import expand_paths, read_file
from core.serving.settings import CLASS_NAMES, DEFAULT_OPERATING_POINT
from core.serving.site import SiteProfile

# One row per input file, the same for both engines. Never pixels, never DICOM patient tags.
SCHEMA = pa.schema([("path", pa.string()), ("input_kind", pa.string()), ("probability", pa.float64()),
                    ("label", pa.string()), ("operating_point", pa.string()), ("threshold", pa.float64()),
                    ("model", pa.string()), ("model_sha256", pa.string()), ("site", pa.string()),
                    ("warnings", pa.string()), ("error", pa.string())])
COLUMNS = tuple(SCHEMA.names)
FORMATS = ("parquet", "csv")
ENGINES = ("local", "ray")
RUN_PREFIX = "run-"
RUN_INFO = "_run.json"  # written when a run starts: engine, format, model
COMPLETE = "_COMPLETE"  # written when a run has finished: its summary
SET_ASIDE = "_incomplete-"  # the parts of an interrupted run that cannot be trusted
ROWS_PER_PART = 1000  # the most work an interruption of the local engine can lose
BATCH_SIZE = 32
THREADS_PER_ACTOR = 1  # each Ray actor holds one CPU; ONNX Runtime's threads match it
UNREADABLE = "could not be screened"


class JobError(RuntimeError):
    """A fault of the job itself (not of one file): it stops before any work, with this message."""


@dataclass(frozen=True)
class JobSpec:
    """What every worker needs to screen as the driver does (small and picklable for Ray)."""

    model: str | None = None  # default: the manifest's default
    models_dir: str | None = None
    site_profile: bytes | None = None  # the profile file's bytes, so a cluster's workers need no copy
    site_name: str = ""
    operating_point: str = DEFAULT_OPERATING_POINT

    def predictor(self, threads: int | None = None) -> Predictor:
        """The job's model at its site's points, hash-checked (raises on a mismatch)."""
        site = SiteProfile.from_bytes(self.site_profile, self.site_name) if self.site_profile else None
        predictor = Predictor.load(self.model, Path(self.models_dir) if self.models_dir else None, site=site,
                                   threads=threads)
        if self.operating_point not in predictor.operating_points:
            raise JobError(f"unknown operating point '{self.operating_point}'; "
                           f"choose from {', '.join(predictor.operating_points)}")
        return predictor


def relative_key(path: str | Path, root: Path) -> str:
    """A row's key: the path relative to the source folder (as given when outside it)."""
    path = Path(str(path).removeprefix("file://"))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


@dataclass(frozen=True)
class Prepared:
    """One file before the forward pass: its row's key and kind, its model input (None when it
    cannot be screened), its quality warnings and its error."""

    key: str
    input_kind: str | None
    tensor: np.ndarray | None
    warnings: str
    error: str


class ArchiveScreener:
    """Screens batches of files into rows; holds one Predictor, loaded once (per Ray actor).

    Called on a batch ``{"path": [...], "bytes": [...]}`` (Ray Data's read_binary_files) it
    returns an Arrow table of SCHEMA, one row per file, keyed by the path relative to root."""

    def __init__(self, spec: JobSpec, root: str, threads: int | None = None, predictor: Predictor | None = None):
        self.spec = spec
        self.root = Path(root)
        # The driver passes the Predictor it has already loaded and checked; a Ray actor loads its own.
        self.predictor = predictor or spec.predictor(threads)

    def key(self, path: str | Path) -> str:
        return relative_key(path, self.root)

    def prepare(self, path: str | Path, data: bytes | None) -> Prepared:
        """One file ready for the forward pass, or its error; data None: read it here."""
        try:
            data = read_file(Path(path)) if data is None else data
            loaded, _, warnings = self.predictor.prepare(bytes(data))
            return Prepared(self.key(path), loaded.decoded.input_kind, loaded.tensor, "; ".join(warnings), "")
        except ImageError as exc:  # NotChestXRayError included: each refusal with its reason
            return Prepared(self.key(path), exc.input_kind, None, "", str(exc))
        except OSError as exc:
            return Prepared(self.key(path), None, None, "", f"cannot be read ({exc.strerror or type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001  one odd file never stops the job; the reason is kept
            return Prepared(self.key(path), None, None, "", f"{UNREADABLE} ({type(exc).__name__})")

    def rows(self, prepared: list[Prepared]) -> pa.Table:
        """The forward pass over the prepared inputs in one batch, and a row for every file."""
        predictor = self.predictor
        good = [i for i, item in enumerate(prepared) if item.tensor is not None]
        probabilities = dict(zip(good, predictor.probabilities(np.stack([prepared[i].tensor for i in good]))
                                 if good else []))
        threshold = float(predictor.operating_points[self.spec.operating_point])
        site = predictor.site.name if predictor.site else None
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        for i, item in enumerate(prepared):
            probability = float(probabilities[i]) if i in probabilities else None
            values = {"path": item.key, "input_kind": item.input_kind, "probability": probability,
                      "operating_point": self.spec.operating_point,
                      "label": CLASS_NAMES[int(probability >= threshold)] if probability is not None else None,
                      "threshold": threshold, "model": predictor.name, "model_sha256": predictor.card.sha256,
                      "site": site, "warnings": item.warnings or None, "error": item.error or None}
            for name in COLUMNS:
                columns[name].append(values[name])
        return pa.table(columns, schema=SCHEMA)

    def __call__(self, batch: dict) -> pa.Table:
        return self.rows([self.prepare(path, data) for path, data in zip(batch["path"], batch["bytes"])])


# --- Listing, and what an output folder already holds ------------------------------------

def list_sources(src: Path, manifest: Path | None = None) -> list[Path]:
    """The image files under src (recursively, sorted), or the manifest's lines, relative to src
    or absolute: a manifest spares an archive whose listing is slow."""
    if manifest is not None:
        lines = [line.strip() for line in manifest.read_text().splitlines()]
        paths = [path if path.is_absolute() else src / path for path in map(Path, filter(None, lines))]
        return list(dict.fromkeys(paths))  # a path listed twice is still one row
    if not src.is_dir():
        raise JobError(f"{src} is not a folder")
    return expand_paths([src])


def runs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{RUN_PREFIX}*") if p.is_dir()) if out.is_dir() else []


def _info(run: Path) -> dict:
    return json.loads((run / RUN_INFO).read_text()) if (run / RUN_INFO).is_file() else {}


def _visible_parts(run: Path) -> list[Path]:
    return sorted(p for p in run.iterdir() if p.is_file() and p.suffix in (".parquet", ".csv")
                  and not p.name.startswith(("_", ".")))


def _read_part(part: Path) -> pa.Table:
    if part.suffix == ".parquet":
        return pq.read_table(part, schema=SCHEMA)
    options = pa_csv.ConvertOptions(column_types=SCHEMA, strings_can_be_null=True)
    return pa_csv.read_csv(part, convert_options=options)


def whole_parts(run: Path) -> tuple[list[Path], list[Path]]:
    """(the run's parts that can be trusted, those that cannot): see the module's docstring."""
    complete, engine = (run / COMPLETE).is_file(), _info(run).get("engine")
    trusted, doubtful = [], []
    for part in _visible_parts(run):
        if complete or engine == "local":
            trusted.append(part)
            continue
        try:  # an interrupted Ray run: a Parquet part whose footer reads was closed whole
            (trusted if part.suffix == ".parquet" and pq.ParquetFile(part).metadata else doubtful).append(part)
        except (OSError, pa.ArrowInvalid):
            doubtful.append(part)
    return trusted, doubtful


def read_results(out: Path) -> pa.Table:
    """Every row the output folder holds in whole parts, once per path."""
    tables = [_read_part(part) for run in runs(out) for part in whole_parts(run)[0]]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


# --- Running a job ------------------------------------------------------------------------

@dataclass
class JobSummary:
    files: int  # screened in this run, refused ones included
    screened: int
    flagged: int
    refused: dict[str, int]  # reason -> files
    already_done: int  # skipped because an earlier run holds them
    seconds: float
    run: str

    @property
    def images_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        lines = [(f"{self.files} files in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s): "
                  f"{self.screened} screened, {self.flagged} flagged for clinical review, "
                  f"{sum(self.refused.values())} refused")]
        lines += [f"  refused, {count}: {reason}" for reason, count in sorted(self.refused.items(), key=lambda r: -r[1])]
        if self.already_done:
            lines.append(f"{self.already_done} files were already screened by earlier runs and were skipped")
        return lines


def summarise(table: pa.Table, already_done: int, seconds: float, run: Path) -> JobSummary:
    errors = [e for e in table.column("error").to_pylist() if e]
    labels = table.column("label").to_pylist()
    return JobSummary(table.num_rows, table.num_rows - len(errors), labels.count(CLASS_NAMES[1]),
                      dict(Counter(errors)), already_done, seconds, run.name)


def _write_part(table: pa.Table, run: Path, index: int, fmt: str) -> None:
    """Written under a hidden name, then renamed into place: a visible part is always whole."""
    final = run / f"part-{index:05d}.{fmt}"
    hidden = run / f".{final.name}.tmp"
    if fmt == "parquet":
        pq.write_table(table, hidden)
    else:
        pa_csv.write_csv(table, hidden)
    os.replace(hidden, final)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_local(screener: ArchiveScreener, paths: list[Path], run: Path, fmt: str, batch_size: int = BATCH_SIZE,
              workers: int | None = None, progress: Callable[[int], None] | None = None) -> None:
    """Reading, decoding and the input checks in a pool of threads (OpenCV, Pillow and pydicom
    release the GIL for most of it), the forward pass in batches in this one."""
    with ThreadPoolExecutor(workers or 1) as pool:
        for index, chunk in enumerate(_chunks(paths, ROWS_PER_PART)):
            prepared = pool.map(lambda path: screener.prepare(path, None), chunk)
            tables = []
            for batch in _chunks(list(prepared), batch_size):
                tables.append(screener.rows(batch))
                if progress:
                    progress(len(batch))
            _write_part(pa.concat_tables(tables), run, index, fmt)


@contextlib.contextmanager
def ray_cluster(address: str | None, workers: int):
    """Ray, quiet (no dashboard, no usage statistics, no worker logs on this terminal): the
    cluster at address, checked before any work, or a local instance on loopback, shut down after."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address and address != "auto":
        host, _, port = address.rpartition(":")
        try:  # Ray itself retries an unreachable address for minutes before it gives up
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as exc:
            raise JobError(f"cannot reach the Ray cluster at {address}: {getattr(exc, 'strerror', None) or exc}") \
                from None
    import ray

    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # One CPU beyond the actors' for the read and write tasks: with every CPU held by an
            # actor, Ray could schedule no read, and the job would wait for ever.
            # "local": a new instance even where another cluster runs on this machine.
            ray.init(address="local", num_cpus=workers * THREADS_PER_ACTOR + 1, _node_ip_address="127.0.0.1",
                     object_store_memory=min(2 << 30, (256 << 20) * (workers + 1)), **quiet)
    except Exception as exc:  # noqa: BLE001  Ray raises many types for a cluster that refuses a driver
        raise JobError(f"cannot start or join Ray{f' at {address}' if address else ''}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(ray, screener: ArchiveScreener, paths: list[Path], run: Path, fmt: str, batch_size: int = BATCH_SIZE,
            workers: int = 1) -> None:
    """Ray Data: the files read as bytes, screened by a pool of actors that each hold one
    Predictor (ONNX Runtime on one thread per actor CPU), written as part files."""
    context = ray.data.DataContext.get_current()
    # Ray Data's own progress bars on a terminal; elsewhere none of its periodic progress logs.
    context.enable_progress_bars = sys.stderr.isatty()
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    missing = [p for p in paths if not p.is_file()]
    present = [str(p) for p in paths if p.is_file()]
    if missing:  # read_binary_files would fail the whole job on them: rows of their own, here
        _write_part(screener.rows([screener.prepare(p, None) for p in missing]), run, 0, fmt)
    if present:
        dataset = ray.data.read_binary_files(present, include_paths=True).map_batches(
            ArchiveScreener, fn_constructor_kwargs={"spec": screener.spec, "root": str(screener.root),
                                                    "threads": THREADS_PER_ACTOR},
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=THREADS_PER_ACTOR, batch_size=batch_size)
        if fmt == "parquet":
            dataset.write_parquet(str(run))
        else:
            dataset.write_csv(str(run))


def _job_identity(predictor: Predictor, spec: JobSpec, fmt: str) -> dict:
    """What every run of one job shares: the rows of two models, sites, thresholds or formats are
    never mixed in one folder."""
    return {"model": predictor.name, "model_sha256": predictor.card.sha256, "site": spec.site_name or None,
            "operating_point": spec.operating_point, "format": fmt, "columns": list(COLUMNS)}


def prepare_run(out: Path, engine: str, identity: dict, resume: bool) -> tuple[Path, set[str]]:
    """The new run's folder and the paths earlier runs hold; refuses to mix a new job into a
    folder with results unless resuming the same job, and sets aside what interrupted runs cannot
    vouch for."""
    earlier = runs(out)
    if earlier and not resume:
        raise JobError(f"{out} already holds results of {len(earlier)} run(s): pass --resume to screen only "
                       "the files not yet there, or choose another folder")
    for run in earlier:
        held = {key: _info(run).get(key) for key in identity}
        if held != identity:
            differs = ", ".join(f"{key} {held[key]} (now {identity[key]})" for key in identity
                                if held[key] != identity[key])
            raise JobError(f"{out} holds rows of another job ({differs}): resume with the same model, site, "
                           "operating point, format and columns, or choose another folder")
        for part in whole_parts(run)[1]:
            part.rename(part.with_name(SET_ASIDE + part.name))
    done = set(read_results(out).column("path").to_pylist())
    run = out / f"{RUN_PREFIX}{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    try:
        run.mkdir(parents=True)
        (run / RUN_INFO).write_text(json.dumps({"engine": engine, **identity,
                                                "started": dt.datetime.now(dt.timezone.utc).isoformat()}))
    except OSError as exc:
        raise JobError(f"cannot write into {out}: {exc.strerror or exc}") from None
    return run, done


def screen_archive(src: Path, out: Path, spec: JobSpec, fmt: str = "parquet", engine: str = "local",
                   resume: bool = False, manifest: Path | None = None, batch_size: int = BATCH_SIZE,
                   workers: int | None = None, address: str | None = None,
                   progress: Callable[[int, int], Callable[[int], None] | None] | None = None) -> JobSummary:
    """Screen every file of src (or of the manifest) not yet in out; raises JobError for a fault
    of the job, before any work. progress(total, done_before) gives the local engine's callback."""
    if fmt not in FORMATS or engine not in ENGINES:
        raise JobError(f"format must be one of {', '.join(FORMATS)} and engine one of {', '.join(ENGINES)}")
    try:
        predictor = spec.predictor()  # a model, site profile or operating point that does not fit stops here
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise JobError(str(exc)) from None
    paths = list_sources(src, manifest)
    cores = os.cpu_count() or 1
    # Decoding threads may outnumber the cores (they wait on the GIL-free decoders); actors may not.
    workers = workers or (cores if engine == "ray" else min(8, 2 * cores))
    with ray_cluster(address, workers) if engine == "ray" else contextlib.nullcontext() as ray:
        run, done = prepare_run(out, engine, _job_identity(predictor, spec, fmt), resume)
        todo = [path for path in paths if relative_key(path, src) not in done]
        started = time.perf_counter()
        screener = ArchiveScreener(spec, str(src), predictor=predictor)
        if engine == "local":
            callback = progress(len(todo), len(paths) - len(todo)) if progress else None
            run_local(screener, todo, run, fmt, batch_size, workers, callback)
        else:
            run_ray(ray, screener, todo, run, fmt, batch_size, workers)
        seconds = time.perf_counter() - started
    rows = pa.concat_tables([SCHEMA.empty_table(), *map(_read_part, _visible_parts(run))])
    summary = summarise(rows, len(paths) - len(todo), seconds, run)
    (run / COMPLETE).write_text(json.dumps(asdict(summary), indent=1))
    return summary
