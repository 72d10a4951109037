"""The local engine: this machine's cores, part files renamed into place one by one."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import pyarrow as pa

from core.serving.archive.listing import Source
from core.serving.archive.parts import write_part
from core.serving.archive.screener import ArchiveScreener, Prepared

ROWS_PER_PART = 1000  # the most work an interruption of the local engine can lose
BATCHES_AHEAD = 4  # batches decoding while one is in the forward pass
# The forward pass runs in this thread while the pool decodes the next files: ONNX Runtime gets
# FORWARD_SHARE of the cores, the decoding threads the rest. More threads for one forward pass of
# this small network spend more CPU per image than they save in time (measured: 1.5 ms of CPU per
# view on one thread, 3.5 ms on two), which a backlog pays file by file; on 2 cores, one decoding
# thread beside the forward pass spent the least CPU per file and screened the most files a second.
FORWARD_SHARE = 0.25


def forward_threads(cores: int) -> int:
    return max(1, round(cores * FORWARD_SHARE))


def decoding_threads(cores: int) -> int:
    return max(1, cores - forward_threads(cores))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _prepared_batches(pool: ThreadPoolExecutor, screener: ArchiveScreener, todo: list[tuple[Source, str]],
                      batch_size: int) -> Iterator[list[Prepared]]:
    """The files prepared in batches, in order, at most BATCHES_AHEAD batches decoding ahead: the
    forward pass of one batch runs while the next ones decode, and an archive of any size holds
    only a few batches of tensors in memory."""
    batches = _chunks(todo, batch_size)
    pending = deque([pool.submit(screener.prepare, source.path, key) for source, key in batch]
                    for batch in islice(batches, BATCHES_AHEAD))
    while pending:
        ready = pending.popleft()
        following = next(batches, None)
        if following:
            pending.append([pool.submit(screener.prepare, source.path, key) for source, key in following])
        yield [future.result() for future in ready]


def run_local(screener: ArchiveScreener, todo: list[tuple[Source, str]], run: Path, fmt: str, batch_size: int,
              workers: int, progress: Callable[[int], None] | None = None) -> None:
    """Reading, decoding and the input checks in a pool of threads (OpenCV, Pillow and pydicom
    release the GIL for most of it), the forward pass in batches in this one; a part written each
    ROWS_PER_PART rows. todo: (file, row key)."""
    tables, rows, index = [], 0, 0
    with ThreadPoolExecutor(workers) as pool:
        for batch in _prepared_batches(pool, screener, todo, batch_size):
            tables.append(screener.rows(batch))
            rows += len(batch)
            if progress:
                progress(len(batch))
            if rows >= ROWS_PER_PART:
                write_part(pa.concat_tables(tables), run, index, fmt)
                tables, rows, index = [], 0, index + 1
    if tables:
        write_part(pa.concat_tables(tables), run, index, fmt)
