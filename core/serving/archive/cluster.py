"""The Ray engine: a cluster's lifecycle and the job on a pool of Ray actors.

The driver lists the files and makes every row's key; actors of ArchiveScreener, each holding the
driver's exact model, read the files themselves (the size limit is checked before a byte is read,
and a file gone since the listing is a row with its reason) and screen them in batches; the driver
writes their rows as part files. No image byte passes through Ray's object store, only paths and
rows; a local instance spills what it must into the job's own scratch folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from core.serving.archive.listing import Source
from core.serving.archive.local import chunks
from core.serving.archive.parts import table, write_part
from core.serving.archive.screener import ArchiveScreener
from core.serving.errors import JobError

THREADS_PER_ACTOR = 1  # each Ray actor holds one CPU; ONNX Runtime's threads match it
BATCHES_PER_PART = 4  # the most work a kill of the driver can lose, in batches per part
OBJECT_STORE_BYTES = 256 << 20  # a local instance's: only paths and rows pass through it
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
            # "local": a new instance even where another cluster runs on this machine.
            ray.init(address="local", num_cpus=workers * THREADS_PER_ACTOR, _node_ip_address="127.0.0.1",
                     object_store_memory=OBJECT_STORE_BYTES,
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
            workers: int, progress: Callable[[int], None] | None = None) -> None:
    """Batches of (path, key) screened by a pool of actors that each hold one Predictor (ONNX
    Runtime on one thread per actor CPU); this driver writes their rows, as they come, as part files,
    each renamed into place whole, BATCHES_PER_PART batches to a part (every row carries its key, and
    the job checks the run's rows one per file).

    Plain actors rather than Ray Data: a Ray Data actor held 194 MB before its model (ray.data,
    pandas and pyarrow loaded), a plain one 80 MB; with the model and screening, Ray Data's largest
    worker reached 390 MB."""
    from ray.util import ActorPool

    if not todo:
        return
    # No more actors than the cluster has CPUs: the pool would wait for ever on one never placed.
    workers = max(1, min(workers, int(ray.cluster_resources().get("CPU", 1)) // THREADS_PER_ACTOR))
    remote = ray.remote(num_cpus=THREADS_PER_ACTOR, max_restarts=0)(ArchiveScreener)
    actors = [remote.remote(screener.spec, THREADS_PER_ACTOR) for _ in range(workers)]
    batches = [[(str(source.path), key) for source, key in chunk] for chunk in chunks(todo, batch_size)]
    results = ActorPool(actors).map_unordered(lambda actor, batch: actor.screen.remote(batch), batches)
    part: list[dict[str, list]] = []
    index = 0
    try:
        for number, rows in enumerate(results, 1):
            part.append(rows)
            if progress:
                progress(len(rows["path"]))
            if len(part) == BATCHES_PER_PART or number == len(batches):
                write_part(table(part), run, index, fmt)
                part, index = [], index + 1
    except Exception as exc:  # noqa: BLE001  a worker's fault ends the job with one line, not Ray's traceback
        cause = _job_error_in(exc)
        raise cause or JobError(f"the Ray job failed: {_first_line(exc)}") from None
