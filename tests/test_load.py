"""The predictor under concurrency and repetition."""
from concurrent.futures import ThreadPoolExecutor

from conftest import encode, xray_like

from benchmarks.soak import resident_mb, soak
from core.serving.predictor import Predictor

THREADS, CALLS = 8, 50


def test_threads_get_exactly_the_serial_results(tiny_models):
    predictor = Predictor.load(directory=tiny_models)
    images = [encode(xray_like(i, i % 3 == 0, 96 + 8 * (i % 5))) for i in range(THREADS * CALLS)]
    serial = [predictor.screen(image).probability for image in images]
    with ThreadPoolExecutor(THREADS) as pool:
        parallel = list(pool.map(lambda image: predictor.screen(image).probability, images))
    assert parallel == serial


def test_repeated_screening_does_not_grow_memory(tiny_models):
    """A short soak in the test suite; benchmarks/soak.py runs the 1,000-prediction one."""
    predictor = Predictor.load(directory=tiny_models)
    samples = soak(predictor, total=300, every=100)
    assert samples[-1] - samples[0] < 40, samples  # MB, after the first 100 calls warmed everything up
    assert resident_mb() > 0
