"""Decoding every common format, refusals, and one preprocessing path for training and serving."""
import io

import numpy as np
import pytest
from conftest import encode, xray_like
from PIL import Image

from core.analysis import data
from core.learning.pipeline import training_dataset, training_spec
from core.learning.zoo import Recipe
from core.serving.imaging import (
    DECODE_SIDE,
    ImageError,
    PreprocessSpec,
    decode_image,
    load_model_input,
    preprocess,
    to_uint8,
)
from core.serving.predictor import Predictor

SPEC = PreprocessSpec(64)


def test_training_and_serving_give_the_same_tensor(tiny_data, tiny_models):
    predictor = Predictor.load(directory=tiny_models)
    example = data.list_examples(tiny_data, "train")[5]
    training_tensor = data.load_set([example], predictor.spec).inputs[0]
    raw = example.path.read_bytes()
    serving_tensor = load_model_input(raw, predictor.spec).tensor
    np.testing.assert_array_equal(training_tensor, serving_tensor)
    assert serving_tensor.shape == (predictor.spec.size, predictor.spec.size, 1)
    # And the predictor's own path gives the probability of that tensor.
    expected = predictor.probabilities(training_tensor[np.newaxis])[0]
    assert predictor.screen(raw).probability == pytest.approx(expected, abs=1e-6)


def test_equalised_training_and_serving_give_the_same_tensor(tiny_data):
    spec = PreprocessSpec(48, clahe=True, equalise=True)
    example = data.list_examples(tiny_data, "train")[2]
    training_tensor = data.load_set([example], spec).inputs[0]
    np.testing.assert_array_equal(training_tensor, load_model_input(example.path.read_bytes(), spec).tensor)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert "equalise" not in PreprocessSpec(48).to_dict()  # the cards of models without it stay as they were


def test_training_that_augments_before_the_contrast_step_reads_the_serving_tensor(tiny_data):
    # No augmentation drawn: what remains is loading up to the resize, then the
    # contrast step in the input pipeline; it must give screening's tensor exactly.
    spec = PreprocessSpec(48, clahe=True, equalise=True)
    recipe = Recipe(augment_before_contrast=True)
    examples = data.list_examples(tiny_data, "train")[:6]
    loaded = data.load_set(examples, training_spec(spec, recipe))
    served = [load_model_input(e.path.read_bytes(), spec).tensor for e in examples]
    assert all(np.abs(raw - done).mean() > 0.02 for raw, done in zip(loaded.inputs, served))  # a step to apply
    batches, _ = training_dataset(loaded.inputs, loaded.labels, recipe, batch_size=len(examples), seed=0, spec=spec)
    trained = next(iter(batches))[0].numpy()  # shuffled: matched to the served tensors by content
    assert sorted(next(i for i, s in enumerate(served) if np.array_equal(t, s)) for t in trained) == list(range(6))


def test_train_equalise_makes_a_model_that_screens_equalised(tiny_data, tmp_path):
    from core import cli

    assert cli.main(["train", "--data", str(tiny_data), "--arch", "cnn_small", "--epochs", "1", "--size", "32",
                     "--equalise", "--models-dir", str(tmp_path)]) == 0
    predictor = Predictor.load("cnn_small", tmp_path)
    assert predictor.card.preprocess["equalise"] is True and predictor.spec.equalise
    raw = encode(xray_like(6, True, 128))
    tensor = preprocess(decode_image(raw).pixels, PreprocessSpec(32, equalise=True))
    assert predictor.screen(raw).probability == pytest.approx(predictor.probabilities(tensor[None])[0], abs=1e-6)


@pytest.mark.parametrize("grey_levels", [
    lambda g: 255.0 * (g / 255.0) ** 1.6,  # darker exposure
    lambda g: 255.0 * (g / 255.0) ** 0.6,  # brighter exposure
    lambda g: 0.5 * g + 64,  # lower contrast
])
def test_equalisation_removes_a_change_of_grey_levels(grey_levels):
    gray = xray_like(4, True, 160)
    changed = np.clip(np.round(grey_levels(gray.astype(np.float64))), 0, 255).astype(np.uint8)

    def change(spec):
        return np.abs(preprocess(changed, spec) - preprocess(gray, spec)).mean()

    # Equalisation alone: the same input up to the rounding of merged grey levels.
    assert change(PreprocessSpec(160)) > 0.1
    assert change(PreprocessSpec(160, equalise=True)) < 0.005
    # CLAHE afterwards spreads the merged levels again, but less than half the change remains.
    assert change(PreprocessSpec(160, clahe=True, equalise=True)) < change(PreprocessSpec(160, clahe=True)) / 2


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16"])
def test_common_modes_decode_to_the_same_picture(mode):
    gray = xray_like(1, False, 128)
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(gray).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode(np.asarray(image), fmt) if mode != "CMYK" else _save(image, fmt))
    reference = preprocess(decode_image(encode(gray, "PNG")).pixels, SPEC)
    tolerance = 0.03 if fmt == "JPEG" else 0.01
    assert np.abs(preprocess(decoded.pixels, SPEC) - reference).mean() < tolerance


def _save(image, fmt):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_exif_rotation_is_applied():
    gray = np.zeros((60, 100), np.uint8)
    gray[:, :50] = 255
    image = Image.fromarray(gray)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    decoded = decode_image(buffer.getvalue())
    assert decoded.pixels.shape == (100, 60)
    assert decoded.pixels[:50].mean() > 200 and decoded.pixels[50:].mean() < 50  # left half went to the top


def test_large_jpeg_decodes_at_reduced_scale_to_the_same_model_input():
    big = encode(xray_like(5, True, 2048))
    decoded = decode_image(big)
    assert DECODE_SIDE <= min(decoded.pixels.shape) < 2048  # DCT-scaled: a quarter of the pixels or fewer
    full = to_uint8(np.asarray(Image.open(io.BytesIO(big)).convert("L")))
    spec = PreprocessSpec(160, clahe=True)
    # Within 2% of the range on average: the stretch to 8 bits sees slightly different extremes.
    assert np.abs(preprocess(decoded.pixels, spec) - preprocess(full, spec)).mean() < 0.02
    small = encode(xray_like(5, True, 224))  # the data sets' size: decoded in full, as in training
    assert decode_image(small).pixels.shape == (224, 224)


@pytest.mark.parametrize("payload, reason", [
    (b"", "empty"),
    (b"hello, this is a text file", "not a supported image"),
    (encode(xray_like(2, True))[:400], "truncated or corrupt"),
    (encode(np.full((64, 64), 80, np.uint8), "PNG"), "blank"),
    (encode(np.zeros((8, 8), np.uint8) + np.eye(8, dtype=np.uint8), "PNG"), "too small"),
])
def test_bad_inputs_are_refused_with_a_reason(payload, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(payload)


@pytest.mark.parametrize("shape, file_format", [((40000, 40), "JPEG"), ((40, 40000), "PNG"), ((190, 4000), "JPEG")])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_long_strip_is_refused_as_too_elongated_not_searched_for_a_film(shape, file_format, channels, detector,
                                                                         monkeypatch):
    """A strip a thousand times longer than wide holds no film: the photo finder, which shrinks a picture
    by its longer side, had no pixels left across it and raised OpenCV's error (found by the fuzz test)."""
    from core.serving import photo
    from core.serving.quality import NotChestXRayError, check_chest_xray

    strip = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    strip = np.repeat(strip[..., np.newaxis], 3, axis=-1) if channels == 3 else strip
    monkeypatch.setattr(photo, "locate", lambda *_: pytest.fail("a strip was searched for a film"))
    decoded = decode_image(encode(strip, file_format))
    assert decoded.input_kind == "digital" and decoded.pixels.shape == shape[:2]
    with pytest.raises(NotChestXRayError, match="too elongated"):
        check_chest_xray(decoded, detector)


def test_decompression_bomb_is_refused_from_the_header():
    # A 30,000 x 30,000 PNG compresses to a few hundred KB but would need 900 MB decoded.
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
    bomb = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 30001 * 16)) + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="too large"):
        decode_image(bomb)


def test_a_jpeg_named_png_is_judged_by_its_content():
    decoded = decode_image(encode(xray_like(3, False), "JPEG"))
    assert decoded.format == "JPEG"
