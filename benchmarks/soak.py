"""Memory soak: screen and explain many images in one process and watch resident memory.

Usage: python -m benchmarks.soak [--total 1000] [--model NAME]
Bound: after the first 100 calls (graph tracing, allocator pools) resident memory
grows by less than 40 MB over the rest of the run.
"""
from __future__ import annotations

import argparse

from core.analysis.synthetic import chest_jpeg
from core.serving.predictor import Predictor

BOUND_MB = 40


def resident_mb() -> float:
    """This process's resident set size (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def soak(predictor: Predictor, total: int = 1000, every: int = 100) -> list[float]:
    """Resident MB after every `every` calls of screen + heat map."""
    samples = []
    for i in range(1, total + 1):
        predictor.screen(chest_jpeg(i % 50, i % 2 == 0, 256), heatmap=True)
        if i % every == 0:
            samples.append(resident_mb())
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=1000)
    parser.add_argument("--model")
    args = parser.parse_args()
    samples = soak(Predictor.load(args.model), args.total)
    growth = samples[-1] - samples[0]
    print("resident MB every 100 calls:", " ".join(f"{s:.0f}" for s in samples))
    print(f"growth after warm-up: {growth:.1f} MB (bound {BOUND_MB} MB): {'OK' if growth < BOUND_MB else 'OVER'}")


if __name__ == "__main__":
    main()
