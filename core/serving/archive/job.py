"""An archive job: what it is, the checks before any work, and its run."""
from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from core.serving.archive import cluster, local, store
from core.serving.archive.listing import KEY_NEEDED, PATH_COLUMNS, RowKeys, list_sources, load_key, manifest_digest
from core.serving.archive.parts import COLUMNS, FORMATS, read_parts
from core.serving.archive.screener import ArchiveScreener, JobSpec
from core.serving.errors import JobError
from core.serving.predictor import Predictor
from core.serving.settings import CLASS_NAMES

ENGINES = ("local", "ray")
BATCH_SIZE = 32
# What makes two runs one job, in the words a refusal uses: rows that differ in any of these are
# never mixed in one folder, and a file is never taken as done by a run that screened another.
IDENTITY = {"source": "source folder", "manifest_sha256": "manifest (sha256)", "model": "model",
            "model_sha256": "model file (sha256)", "onnx_sha256": "ONNX file (sha256)",
            "scoring": "model card's calibration, zooms and thresholds, or the decoding (sha256)",
            "raw_recipe": "model card's zooms or the decoding (sha256)",
            "threshold": "threshold", "site": "site profile",
            "site_sha256": "site profile's content (sha256)", "operating_point": "operating point",
            "format": "format", "columns": "columns", "path_column": "path column",
            "pseudonym_key": "pseudonym key (fingerprint)", "source_as_given": "SRC as typed"}


def identity(src: Path, manifest: Path | None, predictor: Predictor, spec: JobSpec, fmt: str, keys: RowKeys) -> dict:
    return {"source": str(src.resolve()), "manifest_sha256": manifest_digest(manifest), "model": predictor.name,
            "model_sha256": spec.model_sha256, "onnx_sha256": spec.onnx_sha256, "scoring": spec.scoring,
            "raw_recipe": predictor.raw_recipe,
            "threshold": float(predictor.operating_points[spec.operating_point]), "site": spec.site_name or None,
            "site_sha256": spec.site_sha256, "operating_point": spec.operating_point, "format": fmt,
            "columns": list(COLUMNS), **keys.identity}


def _shown(value) -> str:
    text = str(value)
    return f"{text[:12]}…" if re.fullmatch(r"[0-9a-f]{40,}", text) else text


def differences(held: dict, wanted: dict) -> list[str]:
    return [f"{words} {_shown(held.get(key))} (now {_shown(wanted[key])})" for key, words in IDENTITY.items()
            if held.get(key) != wanted[key]]


def refusal_counts(reasons: list[str]) -> dict[str, int]:
    """Files per reason, a reason with numbers in it (a glare share, a size) counted as one kind:
    shown as it is when all of its files say the same, with N for the numbers when they differ."""
    kinds: dict[str, list[str]] = {}
    for reason in reasons:
        kinds.setdefault(re.sub(r"\d+(?:\.\d+)?", "N", reason), []).append(reason)
    return {(said[0] if len(set(said)) == 1 else kind): len(said) for kind, said in kinds.items()}


@dataclass
class JobSummary:
    files: int  # screened in this run, refused ones included
    screened: int
    flagged: int
    refused: dict[str, int]  # reason -> files
    already_done: int  # skipped because an earlier run of the job holds them
    seconds: float
    run: str  # empty when there was nothing to screen
    set_aside: list[str] = field(default_factory=list)  # run folders without a job record, or unreadable
    not_images: int = 0  # files under SRC that are no images, by name and content

    @property
    def images_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        lines = [(f"{self.files} files in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s): "
                  f"{self.screened} screened, {self.flagged} flagged for clinical review, "
                  f"{sum(self.refused.values())} refused")]
        lines += [f"  refused, {count}: {reason}" for reason, count in sorted(self.refused.items(), key=lambda r: -r[1])]
        if self.already_done:
            lines.append(f"{self.already_done} files were already screened by earlier runs of this job and were skipped")
        if self.set_aside:
            lines.append(f"set aside {len(self.set_aside)} run folder(s) without a job record or with a part that "
                         f"cannot be read ({', '.join(self.set_aside)}): their files were screened again")
        if self.not_images:
            lines.append(f"{self.not_images} files under SRC are not JPEG, PNG or DICOM (by name and content) and "
                         "were not screened")
        return lines


def summarise(table: pa.Table, already_done: int, seconds: float, run: Path, set_aside: list[str],
              not_images: int) -> JobSummary:
    errors = [e for e in table.column("error").to_pylist() if e]
    labels = table.column("label").to_pylist()
    return JobSummary(table.num_rows, table.num_rows - len(errors), labels.count(CLASS_NAMES[1]),
                      refusal_counts(errors), already_done, seconds, run.name, set_aside, not_images)


def _earlier_runs(out: Path, wanted: dict, resume: bool) -> None:
    """Refuses (before changing any) a folder that holds another job's rows, or any rows without
    --resume; then seals each of the job's earlier runs."""
    earlier = store.runs(out)
    if earlier and not resume:
        raise JobError(f"{out} already holds results of {len(earlier)} run(s): pass --resume to screen only "
                       "the files not yet there, or choose another folder")
    for run in earlier:
        differs = differences(store.info(run), wanted)
        if differs:
            raise JobError(f"{out} holds rows of another job: {'; '.join(differs)}. --resume continues only the "
                           "same job (the same files, model file and card, site profile, operating point, format "
                           "and path column): screen into another folder, or resume with the job's own settings")
    for run in earlier:
        store.seal(run)


def _done(out: Path, set_aside: list[str]) -> set[str]:
    """The keys the job's earlier runs hold. A run with a part that cannot be read any more is set
    aside whole, so that its files are screened again rather than taken as done."""
    done: set[str] = set()
    for run in store.runs(out):
        rows = store.read_run(run, ["path"])
        if rows is None:
            store.set_aside(run)
            set_aside.append(run.name)
        else:
            done.update(rows.column("path").to_pylist())
    return done


def _check_rows(rows: pa.Table, todo: list[tuple], run: Path) -> None:
    """Every file of the run has exactly one row; else none of the run's rows count (set aside whole)."""
    written = Counter(rows.column("path").to_pylist())
    expected = {key for _, key in todo}
    if set(written) != expected or any(count > 1 for count in written.values()):
        store.set_aside(run)
        raise JobError(f"the run wrote {rows.num_rows} rows for {len(expected)} files (on a cluster, DIR and SRC "
                       "must be at the same path on every node): its rows are set aside; run again with --resume")


def screen_archive(src: Path, out: Path, spec: JobSpec, fmt: str = "parquet", engine: str = "local",
                   resume: bool = False, manifest: Path | None = None, batch_size: int = BATCH_SIZE,
                   workers: int | None = None, address: str | None = None,
                   progress: Callable[[int, int], Callable[[int], None] | None] | None = None,
                   path_column: str = "relative", key_file: Path | None = None) -> JobSummary:
    """Screen every file of src (or of the manifest) that no earlier run of the same job in out
    holds; raises JobError for a fault of the job, before any work. progress(total, done_before)
    gives a callback told each batch's count of files."""
    if fmt not in FORMATS or engine not in ENGINES or path_column not in PATH_COLUMNS:
        raise JobError(f"format must be one of {', '.join(FORMATS)}, engine one of {', '.join(ENGINES)} "
                       f"and the path column one of {', '.join(PATH_COLUMNS)}")
    if batch_size < 1 or (workers is not None and workers < 1):
        raise JobError("--batch-size and --workers must be at least 1")
    if (path_column == "pseudonym") != (key_file is not None):
        raise JobError(KEY_NEEDED)  # before a key file is made
    out = Path(os.path.abspath(out))  # a cluster's writers resolve a relative path against their own folder
    cores = os.cpu_count() or 1
    if engine == "ray":
        cluster.import_ray()
        cluster.check_reachable(address)
    # A model, site profile or operating point that does not fit stops here. The local engine's
    # forward passes get their own share of the cores, the decoding threads the rest.
    predictor = spec.predictor(local.forward_threads(cores) if engine == "local" else None)
    spec = spec.pinned(predictor)  # every worker screens with this very file and card
    keys = RowKeys(src.resolve(), path_column, load_key(key_file, create=not resume) if key_file else None, str(src))
    listing = list_sources(src, manifest)
    wanted = identity(src, manifest, predictor, spec, fmt, keys)
    workers = workers or (cores if engine == "ray" else local.decoding_threads(cores))
    with store.locked(out):
        set_aside = store.set_aside_unrecorded(out)
        _earlier_runs(out, wanted, resume)
        done = _done(out, set_aside)
        todo = [(source, key) for source, key in ((s, keys(s)) for s in listing.sources) if key not in done]
        already = len(listing.sources) - len(todo)
        store.remove_scratch(out)  # what a crashed Ray job spilled, even when nothing is left to screen
        if not todo:  # nothing to screen: no cluster, no empty run
            return JobSummary(0, 0, 0, {}, already, 0.0, "", set_aside, listing.not_images)
        try:
            with (cluster.ray_cluster(address, workers, store.scratch(out)) if engine == "ray"
                  else contextlib.nullcontext()) as ray:
                run = store.new_run(out, {"engine": engine, **wanted})
                started = time.perf_counter()
                screener = ArchiveScreener(spec, predictor=predictor)
                counted = progress(len(todo), already) if progress else None
                if engine == "local":
                    local.run_local(screener, todo, run, fmt, batch_size, workers, counted)
                else:
                    cluster.run_ray(ray, screener, todo, run, fmt, batch_size, workers, counted)
                seconds = time.perf_counter() - started
        finally:
            if engine == "ray":
                store.remove_scratch(out)
        rows = read_parts(store.visible_parts(run))  # the engine has finished: every part is whole
        _check_rows(rows, todo, run)
        summary = summarise(rows, already, seconds, run, set_aside, listing.not_images)
        store.finish(run, asdict(summary))
    return summary
