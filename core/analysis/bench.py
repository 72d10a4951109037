"""Benchmarks that print numbers: latency from bytes to result, throughput, heat-map cost,
for each model on each runtime (ONNX Runtime, which screening uses, and Keras)."""
from __future__ import annotations

import time

import numpy as np

from core.analysis.synthetic import chest_jpeg
from core.serving import registry
from core.serving.heatmap import overlay
from core.serving.imaging import load_model_input
from core.serving.predictor import RUNTIMES, Predictor

WARM_UP = 3  # graph tracing, session start-up and allocators


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def _timed(call, runs: int) -> list[float]:
    for _ in range(WARM_UP):
        call()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        timings.append(1e3 * (time.perf_counter() - started))
    return timings


def bench_model(predictor: Predictor, image: bytes, runs: int = 50, batch: int = 32) -> dict:
    """Bytes to result (decode, checks, preprocessing, zooms, forward, calibration), then batch
    throughput and the extra cost of a heat map with its overlay."""
    p50, p95 = _percentiles(_timed(lambda: predictor.screen(image), runs))
    inputs = np.repeat(load_model_input(image, predictor.spec).tensor[np.newaxis], batch, axis=0)
    rounds = 5
    throughput = rounds * batch / (1e-3 * sum(_timed(lambda: predictor.probabilities(inputs), rounds)))

    def with_heatmap():
        result = predictor.screen(image, heatmap=True)
        overlay(result.image, result.heatmap, frame=result.frame)

    with_heat = _percentiles(_timed(with_heatmap, max(5, runs // 5)))[0]
    return {"model": predictor.name, "runtime": predictor.runtime, "parameters": predictor.card.parameters,
            "file_mb": predictor.card.file_bytes / 1e6, "p50_ms": p50, "p95_ms": p95,
            "throughput_per_s": throughput, "explain_ms": max(0.0, with_heat - p50)}


def run(names: list[str] | None = None, runs: int = 50, runtimes: tuple[str, ...] = RUNTIMES) -> list[dict]:
    """One row per model and runtime; vs_keras is the Keras path's p50 over this row's."""
    image = chest_jpeg()  # a clinic's typical 1024 px upload
    rows = []
    for name in names or registry.model_names():
        measured = [bench_model(Predictor.load(name, runtime=runtime), image, runs) for runtime in runtimes]
        keras = next((r for r in measured if r["runtime"] == "keras"), None)
        for row in measured:
            row["vs_keras"] = keras["p50_ms"] / row["p50_ms"] if keras else None
        # A model without an export falls back to Keras: one row, not two of the same path.
        rows += list({row["runtime"]: row for row in measured}.values())
    return rows
