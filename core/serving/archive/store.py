"""An output folder's bookkeeping: one job at a time, its runs, and which of their rows count.

Each run of a job writes into its own ``run-…`` folder, which appears with its job record
(``_run.json``) already inside. The rows that count are:
- a finished run's parts, listed in its ``_COMPLETE`` marker;
- an interrupted run's whole parts, listed in its ``_SEALED`` marker by the next run of the job.
  Whole means: every part of a run whose parts were renamed into place once written (every run
  since plain Ray actors; the local engine's always), else (Ray Data's workers wrote in place)
  Parquet parts whose footer reads; the rest are set aside (a leading underscore, which Parquet
  and Arrow readers skip). A list, not a look at the folder: whatever appears in a run after it
  was listed adds nothing that counts.
A run folder without a readable job record cannot vouch for its rows and is set aside whole.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pyarrow as pa

from core.serving.archive.parts import SUFFIXES, read_parts, valid_parquet
from core.serving.errors import JobError

RUN_PREFIX = "run-"
RUN_INFO = "_run.json"  # written before the run folder appears: the job's identity and engine
COMPLETE = "_COMPLETE"  # a finished run: its summary and its parts
SEALED = "_SEALED"  # an interrupted run, as the next run found it: its whole parts
SET_ASIDE = "_incomplete-"  # what an interrupted run left that cannot be trusted
LOCK = ".lock"  # held by the running job (an OS lock: the kernel frees it when the process dies)
SCRATCH = ".scratch"  # the job's temporary files (Ray's object spilling): removed at the end and by the next job
RENAMED = "renamed into place"  # a run record's "parts": each part written whole under a hidden name first
SCRATCH_SETTLE_SECONDS = 10  # the longest a closing Ray instance was seen to write into it after shutdown, and more


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def locked(out: Path):
    """Hold out for one job: a second job on it is refused, naming the one running."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK, "a+")  # noqa: SIM115  held for the whole job
    except OSError as exc:
        raise JobError(f"cannot write into {out}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise JobError(f"{out} is being screened by another job ({holder}): wait for it to finish, "
                           "or screen into another folder") from None
        except OSError as exc:  # a file system without locks (some network mounts)
            raise JobError(f"cannot lock {out} ({exc.strerror or exc}): screen into a folder on a local disk") \
                from None
        if os.fstat(handle.fileno()).st_ino != (out / LOCK).stat().st_ino:
            # The lock file was deleted and made again since it was opened: another job may hold the new one.
            raise JobError(f"{out / LOCK} changed while this job opened it: start the job again")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {_now()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)  # a finished job names no holder; the kernel drops the lock with the file


@contextlib.contextmanager
def reading(out: Path):
    """Read out's rows while no job writes to them: a shared lock, which needs no write access."""
    if not out.is_dir():
        raise JobError(f"{out} is not a folder of an archive job's results")
    if not (out / LOCK).exists():  # no job has ever run here
        yield
        return
    with open(out / LOCK) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"{out} is being screened by another job ({handle.read().strip() or 'another process'}): "
                           "wait for it to finish") from None
        yield


def remove_scratch(out: Path) -> None:
    """The job's temporary folder gone, whatever a crashed job or a closing Ray instance left: Ray's
    processes can still write into it for a moment after shutdown, so it is removed until it stays so."""
    folder = out / SCRATCH
    deadline = time.monotonic() + SCRATCH_SETTLE_SECONDS
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        time.sleep(0.2)
        if not folder.exists() or time.monotonic() > deadline:
            return


def scratch(out: Path) -> Path:
    """The job's own temporary folder, made empty."""
    remove_scratch(out)
    (out / SCRATCH).mkdir()
    return out / SCRATCH


def runs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob(f"{RUN_PREFIX}*") if p.is_dir()) if out.is_dir() else []


def _json(path: Path) -> dict | None:
    """A marker's content; None when it is missing or not readable JSON (a write cut short)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def info(run: Path) -> dict | None:
    return _json(run / RUN_INFO)


def visible_parts(run: Path) -> list[Path]:
    return sorted(p for p in run.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(("_", ".")))


def _listed(run: Path) -> list[Path] | None:
    """The parts a finished or sealed run lists, or None when it lists none."""
    for marker in (COMPLETE, SEALED):
        content = _json(run / marker)
        if content is not None and "parts" in content:
            return [run / name for name in content["parts"]]
    return None


def whole_parts(run: Path) -> tuple[list[Path], list[Path]]:
    """(the run's parts that count, those that cannot be trusted): see the module's docstring."""
    listed = _listed(run)
    if listed is not None:
        return listed, []
    visible = visible_parts(run)
    record = info(run) or {}
    if record.get("engine") == "local" or record.get("parts") == RENAMED:
        return visible, []
    valid = valid_parquet(visible)
    return [p for p in visible if p in valid], [p for p in visible if p not in valid]


def read_results(out: Path, columns: list[str] | None = None) -> pa.Table:
    """Every row the output folder holds in parts that count (only the columns asked for); a run
    without a readable job record vouches for none of its rows."""
    return read_parts([part for run in runs(out) if info(run) is not None for part in whole_parts(run)[0]], columns)


def read_run(run: Path, columns: list[str] | None = None) -> pa.Table | None:
    """The rows a run's parts that count hold; None when one of them is missing or cannot be read."""
    try:
        return read_parts(whole_parts(run)[0], columns)
    except (OSError, pa.ArrowException):
        return None


def set_aside(run: Path) -> None:
    """A whole run folder no longer counts: its files are screened again."""
    run.rename(run.with_name(SET_ASIDE + run.name))


def set_aside_unrecorded(out: Path) -> list[str]:
    """Run folders without a readable job record set aside whole (their rows are screened again),
    and run folders never made visible removed; the names of those set aside."""
    for staging in out.glob(f".{RUN_PREFIX}*"):
        shutil.rmtree(staging, ignore_errors=True)
    unrecorded = []
    for run in runs(out):
        if info(run) is None:
            set_aside(run)
            unrecorded.append(run.name)
    return unrecorded


def seal(run: Path) -> None:
    """An interrupted run fixed as found (its whole parts listed, the rest set aside), and what a
    straggling writer left since a run was listed set aside too: a reader of the folder (pandas,
    pyarrow) sees only the rows that count."""
    listed = _listed(run)
    if listed is None:
        listed, doubtful = whole_parts(run)
        _write_marker(run / SEALED, {"sealed": _now(), "parts": [p.name for p in listed]})
    else:
        doubtful = [part for part in visible_parts(run) if part not in listed]
    for part in doubtful:
        part.rename(part.with_name(SET_ASIDE + part.name))


def new_run(out: Path, record: dict) -> Path:
    """A run folder that appears with its job record inside: no run is ever seen without one."""
    name = f"{RUN_PREFIX}{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    staging = out / f".{name}"
    try:
        staging.mkdir()
        _write_marker(staging / RUN_INFO, {**record, "parts": RENAMED, "started": _now()})
        staging.rename(out / name)
    except OSError as exc:
        raise JobError(f"cannot write into {out}: {exc.strerror or exc}") from None
    return out / name


def finish(run: Path, summary: dict) -> None:
    _write_marker(run / COMPLETE, {**summary, "parts": [p.name for p in visible_parts(run)]})


def _write_marker(path: Path, content: dict) -> None:
    """Written whole or not at all."""
    hidden = path.with_name(f".{path.name}.tmp")
    hidden.write_text(json.dumps(content, indent=1))
    os.replace(hidden, path)
