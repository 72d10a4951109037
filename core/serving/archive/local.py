"""The local engine: this machine's cores, part files renamed into place one by one."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.serving.archive.listing import Source
from core.serving.archive.parts import table, write_part
from core.serving.archive.screener import ArchiveScreener

ROWS_PER_PART = 1000  # the most work an interruption of the local engine can lose
# ONNX Runtime gets FORWARD_SHARE of the cores for the forward pass, the decoding threads the rest.
# More threads for one forward pass of this small network spend more CPU per image than they save
# in time (measured: 1.5 ms of CPU per view on one thread, 3.5 ms on two), which a backlog pays file
# by file; on 2 cores, one decoding thread spent the least CPU per file and screened the most files
# a second.
FORWARD_SHARE = 0.25


def forward_threads(cores: int) -> int:
    return max(1, round(cores * FORWARD_SHARE))


def decoding_threads(cores: int) -> int:
    return max(1, cores - forward_threads(cores))


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_local(screener: ArchiveScreener, todo: list[tuple[Source, str]], run: Path, fmt: str, batch_size: int,
              workers: int, progress: Callable[[int], None] | None = None) -> None:
    """Reading, decoding and the input checks of a part's files in a pool of threads (OpenCV, Pillow
    and pydicom release the GIL for most of it), then its forward passes in batches in this one; a part
    written each ROWS_PER_PART files, so memory holds at most one part's tensors. todo: (file, row key).

    Decoding the next files during the forward pass was tried: on 2 cores it screened 0-17% more files
    a second and spent 16.0-16.7 ms of CPU per file against 11.6-14.5 ms, the cores' caches and
    execution units shared by two busy threads; a backlog pays the CPU."""
    with ThreadPoolExecutor(workers) as pool:
        for index, chunk in enumerate(chunks(todo, ROWS_PER_PART)):
            prepared = pool.map(lambda item: screener.prepare(item[0].path, item[1]), chunk)
            batches = []
            for batch in chunks(list(prepared), batch_size):
                batches.append(screener.rows(batch))
                if progress:
                    progress(len(batch))
            write_part(table(batches), run, index, fmt)
