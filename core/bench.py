"""Benchmarks that print numbers: latency from bytes to result, throughput, explanation cost."""
from __future__ import annotations

import time

import numpy as np

from core import explain, registry
from core.imaging import decode_image, preprocess
from core.predictor import Predictor
from core.synthetic import chest_jpeg

REFERENCE_MODEL = "keras_io"


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def bench_model(predictor: Predictor, image: bytes, runs: int = 50, batch: int = 32) -> dict:
    for _ in range(3):  # warm-up: graph tracing and allocator
        predictor.screen(image)
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        predictor.screen(image)
        latencies.append(1e3 * (time.perf_counter() - started))
    inputs = np.repeat(preprocess(decode_image(image).pixels, predictor.spec)[np.newaxis], batch, axis=0)
    predictor.probabilities(inputs)
    started = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        predictor.probabilities(inputs)
    throughput = rounds * batch / (time.perf_counter() - started)
    p50, p95 = _percentiles(latencies)
    return {"model": predictor.name, "parameters": predictor.card["parameters"],
            "file_mb": predictor.card["file_bytes"] / 1e6, "p50_ms": p50, "p95_ms": p95,
            "throughput_per_s": throughput, "explain_ms": bench_explanation(predictor, image, runs=10)}


def bench_explanation(predictor: Predictor, image: bytes, runs: int = 10) -> float:
    """p50 of one heat map and its overlay for one image, the model already loaded."""
    method = explain.best_method(predictor.model)
    timings = []
    for i in range(runs + 2):
        started = time.perf_counter()
        decoded = decode_image(image)
        heat = explain.explain(predictor.model, preprocess(decoded.pixels, predictor.spec), method)
        explain.overlay(decoded.pixels, heat)
        if i >= 2:  # the first calls build and trace the explanation graph
            timings.append(1e3 * (time.perf_counter() - started))
    return _percentiles(timings)[0]


def run(names: list[str] | None = None, runs: int = 50) -> list[dict]:
    names = names or registry.model_names()
    image = chest_jpeg()  # a clinic's typical 1024 px upload
    rows = [bench_model(Predictor.load(name), image, runs) for name in names]
    reference = next((r for r in rows if r["model"] == REFERENCE_MODEL), None)
    for row in rows:
        row["p50_vs_keras_io"] = row["p50_ms"] / reference["p50_ms"] if reference else None
    return rows
