"""The film finder on pictures it was not tuned on: benchmarks.randomised_photos, written apart from
core.analysis.photos (the proxy its thresholds were fitted on), every parameter drawn at random."""
import ast
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import xray_like
from PIL import Image

from benchmarks import randomised_photos
from benchmarks.randomised_photos import KINDS, render
from core.serving.imaging import decode_image
from core.serving.quality import check_chest_xray

XRAY = xray_like(11, False, 768)
CORNERS_WITHIN = 0.02  # of the picture's shorter side, as benchmarks/photos.py counts a film found
# Each kind and what it is, written out here rather than read from the renderer.
EXPECTED_KIND = {
    "film on a larger lightbox at a slant": "photo",
    "square with a bright margin": "photo",
    "uneven light": "photo",
    "glare": "photo",
    "blur": "photo",
    "all together": "photo",
    "viewer screenshot": "screenshot",
}
SEEDS = (0, 1, 2)
# Renderings among these that fail today, as the benchmark's figures say some do (docs/benchmarks.md,
# python -m benchmarks.photos --count 100 --renderer randomised): kept, strictly expected to fail, so that a
# change that mends one is seen.
KNOWN_FAILURES = {
    ("film on a larger lightbox at a slant", 0): "a clip joins the film to the lightbox's frame: the lightbox "
                                                 "is taken for the film (benchmark, 400 X-rays: 83% of this kind found)",
    ("all together", 0): "a brightening and a gradient over the lower film, flattened only where the band "
                         "around the film shows it: refused as upside down (benchmark: 3 of 100 uneven-light "
                         "photos refused so)",
    ("all together", 2): "daylight over the upper film on a warm lightbox: its colour is balanced region by "
                         "region, but the brightening reads as upside down (benchmark: all together 95% screened, at dcb9476)",
}
CASES = [pytest.param(name, seed, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name, seed]))
         if (name, seed) in KNOWN_FAILURES else (name, seed) for name in EXPECTED_KIND for seed in SEEDS]


def test_the_second_renderer_is_written_apart_from_the_first():
    """It imports nothing of core.analysis.photos, so the finder is judged on a scene model of its own."""
    tree = ast.parse(Path(randomised_photos.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not any(name and name.startswith("core.analysis") for name in imported), imported
    assert set(KINDS) == set(EXPECTED_KIND)


def test_renderings_are_seeded_and_their_parameters_vary():
    first, again = render(XRAY, "all together", 3), render(XRAY, "all together", 3)
    assert first.data == again.data
    sizes = {Image.open(io.BytesIO(render(XRAY, "all together", seed).data)).size for seed in range(4)}
    assert len(sizes) == 4  # the photo's size and the film's place are drawn anew each time
    assert np.abs(first.corners - render(XRAY, "all together", 4).corners).max() > 10


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_each_kind_is_found_as_its_kind_and_screened(name, seed, detector):
    picture = render(XRAY, name, seed)
    decoded = decode_image(picture.data)
    assert decoded.input_kind == EXPECTED_KIND[name], (name, seed)
    size = Image.open(io.BytesIO(picture.data)).size
    scale = max(decoded.straightened.picture.shape[:2]) / max(size)  # large JPEGs decode at a fraction
    error = np.abs(decoded.straightened.location.corners / scale - picture.corners).max() / min(size)
    assert error <= CORNERS_WITHIN, (name, seed, error)
    check_chest_xray(decoded, detector)  # screened: no refusal


def test_the_benchmark_counts_flips_and_specificity_against_the_same_digital_files():
    from benchmarks.photos import summarise

    digital = [0.1, 0.2, 0.7, 0.9, 0.3]
    photo = [0.6, 0.2, 0.8, None, 0.35]  # one normal flipped, one pneumonia refused
    labels = np.array([0, 0, 1, 1, 0])
    results = [{"digital": {"p": d}, "x": {"p": p, "refusal": "" if p is not None else "the film was not found",
                                           "warnings": [], "kind": "photo", "drawn_kind": "photo", "found": True}}
               for d, p in zip(digital, photo)]
    row = summarise(results, labels, 0.5, ["x"])["x"]
    assert row["screened"] == pytest.approx(4 / 5)
    assert row["label_flips"] == pytest.approx(1 / 4)
    assert row["specificity"] == pytest.approx(2 / 3) and row["digital_specificity_same_images"] == 1.0
    assert row["median_abs_dp"] == pytest.approx(0.075)  # of 0.5, 0.0, 0.1, 0.05
