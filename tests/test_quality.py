"""The not-a-chest-X-ray check: generated non-X-rays refused, real and drawn X-rays accepted."""
import numpy as np
import pytest
from conftest import encode, real_data_dir, requires_real_data, xray_like

from benchmarks.non_xrays import generate
from benchmarks.xray_check import rejected
from core.learning import data
from core.serving import registry
from core.serving.imaging import decode_image
from core.serving.quality import NotChestXRayError, XrayDetector, check_chest_xray


@pytest.fixture(scope="module")
def detector() -> XrayDetector:
    shipped = registry.load_detector()
    assert shipped is not None, "models/xray_detector.npz is missing: run python -m core fit-detector"
    return shipped


def test_generated_non_xrays_are_rejected(detector):
    files = generate(200, seed=123)
    refused = [rejected(payload, detector) for _, payload in files]
    assert np.mean(refused) >= 0.99, [kind for (kind, _), r in zip(files, refused) if not r]


def test_drawn_chest_images_pass(detector):
    for seed in range(10):
        check_chest_xray(decode_image(encode(xray_like(seed, seed % 2 == 0, 300))), detector)


def test_refusal_names_the_reason(detector):
    noise = np.random.default_rng(0).integers(0, 256, (300, 300)).astype(np.uint8)
    with pytest.raises(NotChestXRayError, match="not a chest X-ray"):
        check_chest_xray(decode_image(encode(noise, "PNG")), detector)


@requires_real_data
def test_real_xrays_of_held_out_patients_are_accepted(detector):
    _, held_out = data.split_by_patient(data.list_examples(real_data_dir(), "train"))
    refused = [rejected(e.path.read_bytes(), detector) for e in held_out]
    assert np.mean(refused) <= 0.01


def test_detector_round_trip(tmp_path, detector):
    detector.save(tmp_path / "d.npz")
    loaded = XrayDetector.load(tmp_path / "d.npz")
    assert loaded.threshold == detector.threshold
    np.testing.assert_array_equal(loaded.components, detector.components)


def test_a_turned_or_inverted_chest_x_ray_is_refused_with_a_hint_to_fix_it(detector):
    upright = decode_image(encode(xray_like(11, False, 256)))
    assert check_chest_xray(upright, detector) is not None  # accepted as it is
    for turned, hint in ((np.rot90(upright.pixels, 1), "rotated a quarter turn"), (255 - upright.pixels, "inverted")):
        with pytest.raises(NotChestXRayError, match=hint):
            check_chest_xray(decode_image(encode(np.ascontiguousarray(turned))), detector)
