"""The Ray engine: a cluster's lifecycle and the job as a Ray Data pipeline.

The driver lists the files and makes every row's key; actors of ArchiveScreener, each holding the
driver's exact model, read the files themselves (the size limit is checked before a byte is read,
and a file gone since the listing is a row with its reason), screen them in batches, and Ray Data
writes the rows as part files. No image byte passes through Ray's object store, only paths and
rows; a local instance spills what it must into the job's own scratch folder.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from core.serving.archive.listing import Source
from core.serving.archive.screener import ArchiveScreener
from core.serving.errors import JobError

THREADS_PER_ACTOR = 1  # each Ray actor holds one CPU; ONNX Runtime's threads match it
BATCHES_PER_PART = 4
CLIENT_PORT = 10001  # Ray Client's port when a ray:// address names none
INSTALL_HINT = "the Ray engine needs Ray: pip install -r requirements-scale.txt"


def endpoint(address: str) -> tuple[str, int] | None:
    """The (host, port) a cluster address names, to check before Ray's own minutes of retrying:
    "host:port", "ray://host[:port]" (Ray Client) or "[::1]:port"; None for "auto" (a cluster
    on this machine that Ray finds itself)."""
    if address == "auto":
        return None
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port or (CLIENT_PORT if parts.scheme == "ray" else None)
    except ValueError:
        port = None
    if parts.scheme not in ("", "ray") or not parts.hostname or port is None:
        raise JobError(f"--address {address}: expected HOST:PORT, ray://HOST[:PORT] or auto")
    return parts.hostname, port


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise JobError(INSTALL_HINT) from None
    return ray


def check_reachable(address: str | None) -> None:
    """Refuse an address that nothing answers at: Ray itself retries it for minutes before it gives up."""
    where = endpoint(address) if address else None
    if where:
        try:
            socket.create_connection(where, timeout=5).close()
        except OSError as exc:
            raise JobError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def ray_cluster(address: str | None, workers: int, scratch: Path):
    """Ray, quiet (no dashboard, no usage statistics, no worker logs on this terminal): the
    cluster at address, or a local instance on loopback that spills into scratch, shut down after."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = import_ray()
    quiet = {"log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            spill = {"type": "filesystem", "params": {"directory_path": str(scratch / "spill")}}
            # One CPU beyond the actors' for the write tasks: with every CPU held by an actor, Ray
            # could schedule no write, and the job would wait for ever.
            # "local": a new instance even where another cluster runs on this machine.
            ray.init(address="local", num_cpus=workers * THREADS_PER_ACTOR + 1, _node_ip_address="127.0.0.1",
                     object_store_memory=min(2 << 30, (256 << 20) * (workers + 1)),
                     _system_config={"object_spilling_config": json.dumps(spill)}, include_dashboard=False,
                     **quiet)
    except Exception as exc:  # noqa: BLE001  Ray raises many types for a cluster that refuses a driver
        raise JobError(f"cannot start or join Ray{f' at {address}' if address else ''}: {_first_line(exc)}") \
            from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _job_error_in(exc: BaseException) -> JobError | None:
    """A worker's JobError (another model file, say) inside the errors Ray wraps it in: as a cause,
    or only as text (an actor that died in its constructor)."""
    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, JobError):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    said = re.search(r"JobError: (.+)", str(exc))
    return JobError(said.group(1).strip()) if said else None


def run_ray(ray, screener: ArchiveScreener, todo: list[tuple[Source, str]], run: Path, fmt: str, batch_size: int,
            workers: int) -> None:
    """Ray Data: (path, key) items screened by a pool of actors that each hold one Predictor
    (ONNX Runtime on one thread per actor CPU), written as part files."""
    context = ray.data.DataContext.get_current()
    # Ray Data's own progress bars on a terminal; elsewhere none of its periodic progress logs.
    context.enable_progress_bars = sys.stderr.isatty()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not its advice on CPUs an actor pool holds
    if not todo:
        return
    items = [{"path": str(source.path), "key": key} for source, key in todo]
    # Blocks of a few batches: each becomes a part, the most a kill can lose.
    blocks = -(-len(items) // (BATCHES_PER_PART * batch_size))
    dataset = ray.data.from_items(items, override_num_blocks=blocks) \
        .map_batches(ArchiveScreener, fn_constructor_kwargs={"spec": screener.spec, "threads": THREADS_PER_ACTOR},
                     compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=THREADS_PER_ACTOR,
                     batch_size=batch_size)
    try:
        if fmt == "parquet":
            dataset.write_parquet(str(run))
        else:
            dataset.write_csv(str(run))
    except Exception as exc:  # noqa: BLE001  a worker's fault ends the job with one line, not Ray's traceback
        cause = _job_error_in(exc)
        raise cause or JobError(f"the Ray job failed: {_first_line(exc)}") from None
