"""Archive screening's cost: CPU per file stage by stage, and of whole commands, with the baseline in the same run.

Usage: python -m benchmarks.archive [--count 2000] [--size 1024] [--stage-files 100] [--ray] [--synthetic]

Writes COUNT JPEGs of SIZE px to a temporary folder: real training X-rays enlarged (the data set
found as the tests find it, never copied into the project), or drawn ones with --synthetic or
without the data. Then prints:
1. the stages of one file (read, decode, photo finder, X-ray checks, framing and tensor, forward
   pass), CPU ms per file on one thread, for the JPEGs and for 16-bit DICOMs of the same X-rays;
2. CPU per file (user + sys of the whole command, start-up included) and images/s of
   `core screen SRC` (one file at a time, the baseline) and `core screen SRC --out DIR`;
3. with --ray, `--engine ray` on a local instance: its images/s against the local engine's, start-up
   included, and the largest resident memory of any of its workers.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core.analysis import data
from core.analysis.synthetic import chest_xray, make_dicom
from core.serving import imaging, photo, quality, screening
from core.serving.archive.screener import FORWARD_CHUNK
from core.serving.predictor import Predictor

ROOT = Path(__file__).resolve().parent.parent


def source_images(count: int, size: int, synthetic: bool) -> tuple[list[np.ndarray], str]:
    """count 8-bit X-rays of size px: real ones enlarged where the data set is here, else drawn."""
    folder = None if synthetic else data.default_data_dir()
    files = sorted((folder / "chest_xray" / "train").rglob("*.jpeg")) if folder else []
    if not files:
        return [chest_xray(i, i % 3 == 0, size) for i in range(count)], "drawn"
    chosen = [files[i] for i in np.random.default_rng(0).choice(len(files), count, replace=count > len(files))]
    return [cv2.resize(np.asarray(Image.open(f).convert("L")), (size, size), interpolation=cv2.INTER_CUBIC)
            for f in chosen], "real training"


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class CountedFinder:
    """photo.locate, counted: how many files the film finder ran on."""

    def __init__(self):
        self.calls, self._locate = 0, photo.locate

    def __enter__(self):
        def counted(gray, lossless=False):
            self.calls += 1
            return self._locate(gray, lossless)

        photo.locate = counted
        return self

    def __exit__(self, *_):
        photo.locate = self._locate


def stages(predictor: Predictor, files: list[Path]) -> tuple[dict[str, float], int]:
    """CPU ms per file of each stage on this thread, and how many files the photo finder ran on."""
    spent = dict.fromkeys(("read", "decode (photo finder included where it runs)", "X-ray checks",
                           "framing and tensor", f"forward pass (three zooms, {FORWARD_CHUNK} images a pass)"), 0.0)
    names = list(spent)
    tensors = []
    with CountedFinder() as finder:
        for path in files:
            clock = time.thread_time()
            marks = [clock]
            content = screening.read_file(path)
            marks.append(time.thread_time())
            decoded = imaging.decode_image(content)
            marks.append(time.thread_time())
            quality.check_chest_xray(decoded, predictor.detector)
            marks.append(time.thread_time())
            tensors.append(imaging.preprocess(decoded.pixels, predictor.spec))
            marks.append(time.thread_time())
            for name, start, end in zip(names, marks, marks[1:]):
                spent[name] += end - start
    predictor.probabilities(np.stack(tensors[:FORWARD_CHUNK]))  # warm
    clock = time.thread_time()
    for start in range(0, len(tensors), FORWARD_CHUNK):
        predictor.probabilities(np.stack(tensors[start:start + FORWARD_CHUNK]))
    spent[names[-1]] = time.thread_time() - clock
    return {name: 1e3 * seconds / len(files) for name, seconds in spent.items()}, finder.calls


class WorkerMemory:
    """The largest resident memory of any Ray worker that screens (its process title names the actor):
    all of it, and without the shared object store's pages that it maps (RssShmem)."""

    def __init__(self):
        self.peak_mb, self.peak_own_mb, self._stop = 0.0, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.wait(0.25):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"ArchiveScreener" in title:
                        fields = dict(line.split(":", 1) for line in
                                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
                        kb = {name: int(fields[name].split()[0]) for name in ("VmRSS", "RssShmem")}
                        self.peak_mb = max(self.peak_mb, kb["VmRSS"] / 1024)
                        self.peak_own_mb = max(self.peak_own_mb, (kb["VmRSS"] - kb["RssShmem"]) / 1024)
                except (OSError, KeyError, ValueError):
                    continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def command_cost(args: list[str], env: dict | None = None, allowed: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `python -m core ARGS`, start-up included (its own and its
    waited-for children's user + sys); a command that ends otherwise than allowed stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if done.returncode not in allowed:
        raise SystemExit(f"core {' '.join(args)} failed: {done.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="files per command")
    parser.add_argument("--size", type=int, default=1024, help="their side in pixels")
    parser.add_argument("--stage-files", type=int, default=100, help="files per kind in the stage table")
    parser.add_argument("--ray", action="store_true", help="also the Ray engine (needs requirements-scale.txt)")
    parser.add_argument("--synthetic", action="store_true", help="drawn X-rays even where the data set is here")
    args = parser.parse_args()
    images, origin = source_images(args.count, args.size, args.synthetic)
    predictor = Predictor.load(threads=1)
    with tempfile.TemporaryDirectory() as scratch:
        src, stage_dir = Path(scratch) / "src", Path(scratch) / "stages"
        src.mkdir()
        stage_dir.mkdir()
        for i, pixels in enumerate(images):
            (src / f"x{i:05d}.jpeg").write_bytes(jpeg(pixels))
        jpegs = sorted(src.iterdir())[:args.stage_files]
        dicoms = []
        for i, pixels in enumerate(images[:args.stage_files]):
            dicoms.append(stage_dir / f"x{i:05d}.dcm")
            dicoms[-1].write_bytes(make_dicom(pixels.astype(np.uint16) * 16))
        tables = {kind: stages(predictor, files) for kind, files in (("JPEG", jpegs), ("DICOM", dicoms))}

        print(f"{args.count} {origin} X-rays as {args.size}-px JPEGs (quality 90), model {predictor.name}, "
              f"{os.cpu_count()} cores")
        print(f"\nCPU ms per file, one thread, {args.stage_files} files per kind")
        print(f"{'stage':<46}" + "".join(f"{kind:>9}" for kind in tables))
        for name in tables["JPEG"][0]:
            print(f"{name:<46}" + "".join(f"{table[name]:>9.2f}" for table, _ in tables.values()))
        print(f"{'total':<46}" + "".join(f"{sum(table.values()):>9.2f}" for table, _ in tables.values()))
        print(f"{'files the photo finder ran on':<46}" + "".join(f"{calls:>9}" for _, calls in tables.values()))

        print(f"\nwhole commands on {args.count} files, start-up included")
        costs = {"core screen SRC (one at a time)": command_cost(["screen", str(src)], allowed=(0, 1)),  # 1: refusals
                 "core screen SRC --out DIR (local engine)": command_cost(
                     ["screen", str(src), "--out", f"{scratch}/out-local"])}
        memory = None
        if args.ray:
            with WorkerMemory() as memory:
                costs["core screen SRC --out DIR --engine ray"] = command_cost(
                    ["screen", str(src), "--out", f"{scratch}/out-ray", "--engine", "ray"],
                    {"RAY_USAGE_STATS_ENABLED": "0"})
    local_rate = args.count / costs["core screen SRC --out DIR (local engine)"][1]
    print(f"{'command':<44}{'CPU ms/file':>12}{'images/s':>10}{'vs local':>10}")
    for name, (cpu, wall) in costs.items():
        rate = args.count / wall
        cpu_text = f"{1e3 * cpu / args.count:>12.1f}" if "ray" not in name else f"{'(workers)':>12}"
        print(f"{name:<44}{cpu_text}{rate:>10.1f}{rate / local_rate:>9.2f}x")
    if memory is not None:
        print(f"largest Ray worker: {memory.peak_mb:.0f} MB resident, {memory.peak_own_mb:.0f} MB without the "
              "object store's shared pages")


if __name__ == "__main__":
    main()
