"""Archive screening throughput: the one-at-a-time path against the batched engines, same files, same run.

Usage: python -m benchmarks.archive [--count 2496] [--size 224] [--ray]
Writes COUNT synthetic chest X-rays of SIZE px (a withheld split's size by default) to a
temporary folder, then times: `screen_paths` (one image at a time, what `core screen` did
before --out), the local engine (`screen SRC --out DIR`: decoding in a thread pool, batched
forward passes) and, with --ray, the Ray engine on a local instance (start-up included).
Prints images per second for each and the ratio to the one-at-a-time baseline.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from core.analysis.synthetic import chest_jpeg
from core.serving import archive, screening
from core.serving.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2496)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--ray", action="store_true", help="also time the Ray engine (needs requirements-scale.txt)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        src = Path(scratch) / "src"
        src.mkdir()
        for i in range(args.count):
            (src / f"chest{i:05d}.jpeg").write_bytes(chest_jpeg(i, i % 3 == 0, args.size))
        predictor = Predictor.load()
        started = time.perf_counter()
        screening.screen_paths(predictor, [src])
        rates = {"one at a time (screen_paths)": args.count / (time.perf_counter() - started)}
        engines = ["local"] + (["ray"] if args.ray else [])
        for engine in engines:
            started = time.perf_counter()
            archive.screen_archive(src, Path(scratch) / f"out-{engine}", archive.JobSpec(), engine=engine)
            rates[f"{engine} engine (screen --out)"] = args.count / (time.perf_counter() - started)
    baseline = rates["one at a time (screen_paths)"]
    print(f"{args.count} synthetic X-rays of {args.size} px, model {predictor.name}")
    for name, rate in rates.items():
        print(f"{name:<32}{rate:>9.1f} images/s{rate / baseline:>7.2f}x")


if __name__ == "__main__":
    main()
