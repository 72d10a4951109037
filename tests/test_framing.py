"""Framing normalisation: the standard frame's geometry, the localiser's training targets,
the shipped localiser on real X-rays, and one path for training and serving."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from conftest import encode, real_data_dir, requires_real_data, xray_like

from core.analysis import data
from core.analysis.shift import lung_field_box, lung_field_crop
from core.serving import framing, registry
from core.serving.imaging import ModelInput, PreprocessSpec, decode_image, load_model_input, preprocess
from core.serving.predictor import Predictor
from core.serving.registry import ModelIntegrityError

requires_localiser = pytest.mark.skipif(not framing.LOCALISER_PATH.exists(),
                                        reason="models/framing_localiser.onnx is not in this checkout")


def test_standard_frame_of_an_image_framed_as_in_training():
    # The localiser's answer for a training-like X-ray: its frame is the whole image.
    box = framing.frame_box(np.array([0.5, 0.5, 0.0, 0.0]), 200, 200)
    # 75% of each side around the lung-field centre (row 0.45, column 0.5).
    assert box == framing.FrameBox(top=15, left=25, bottom=165, right=175)


def test_standard_frame_of_tighter_and_looser_images():
    # A 50% cut of a training X-ray: its frame is twice its size, so the standard
    # frame (1.5x the image) is cut off at the image's edges: the image is kept whole.
    assert framing.frame_box(np.array([0.5, 0.5, np.log(2), np.log(2)]), 100, 80) == framing.FrameBox(0, 0, 100, 80)
    # A looser image (the training frame fills 80% of it, centred off to the right):
    # the standard frame is 0.75 * 0.8 = 60% of each side, around the shifted centre.
    box = framing.frame_box(np.array([0.5, 0.6, np.log(0.8), np.log(0.8)]), 100, 100)
    assert (box.bottom - box.top, box.right - box.left) == (60, 60)
    assert ((box.top + box.bottom) / 2, (box.left + box.right) / 2) == (46.0, 60.0)
    # A frame reaching past an edge is moved inside, keeping its size.
    box = framing.frame_box(np.array([0.2, 0.5, 0.0, 0.0]), 100, 100)
    assert (box.top, box.bottom) == (0, 75)


def test_heat_map_is_placed_where_the_input_lies_in_the_image():
    decoded = decode_image(encode(xray_like(3, True, 120)))
    loaded = ModelInput(decoded, np.zeros((32, 32, 1), np.float32), framing.FrameBox(20, 30, 80, 90))
    placed = loaded.in_image(np.ones((4, 4), np.float32))
    assert placed.shape == decoded.pixels.shape
    assert placed[20:80, 30:90].min() == pytest.approx(1.0)
    assert placed.sum() == pytest.approx(60 * 60)


def test_overlay_colours_only_the_part_of_the_x_ray_the_model_read():
    from core.serving.heatmap import overlay

    gray = np.full((100, 120), 90, np.uint8)
    shown = overlay(gray, np.ones((10, 10), np.float32), 0.5, framing.FrameBox(10, 20, 60, 100))
    inside, outside = shown[10:60, 20:100], np.concatenate([shown[:10].reshape(-1, 3), shown[60:].reshape(-1, 3)])
    assert (outside == 90).all()  # the plain X-ray
    assert (inside[..., 0] > inside[..., 2]).all()  # tinted red, the colour of the most weight


def test_localiser_targets_point_at_the_uncut_frame():
    """A dot at the X-ray's centre lands, in each random cut, where the cut's target says the frame's centre is."""
    tf = pytest.importorskip("tensorflow")
    from core.learning.framing import random_cuts

    image = np.zeros((1, 224, 224, 1), np.float32)
    image[0, 110:114, 110:114] = 1.0
    cuts, targets = random_cuts(tf.repeat(tf.constant(image), 64, axis=0), tf.random.Generator.from_seed(0))
    cuts, targets = cuts.numpy()[..., 0], targets.numpy()
    size = cuts.shape[1]
    for cut, (row, col, log_height, log_width) in zip(cuts, targets):
        peak = np.unravel_index(np.argmax(cut), cut.shape)
        assert peak[0] / size == pytest.approx(row, abs=4 / size)
        assert peak[1] / size == pytest.approx(col, abs=4 / size)
        # The cut's side is 0.5-1.25 of the X-ray's, so the frame is 0.8-2 times the cut's (with aspect jitter).
        assert np.log(1 / 1.4) < log_height < np.log(2.2) and np.log(1 / 1.4) < log_width < np.log(2.2)


def test_a_localiser_that_does_not_match_the_card_is_refused(tiny_models, tmp_path):
    spec = PreprocessSpec(32, frame="0" * 64)
    with pytest.raises(ModelIntegrityError):
        preprocess(xray_like(1, False, 64), spec)
    # A model tied to another localiser is refused when it is loaded, not at its first image.
    card = registry.load_card("cnn_small", tiny_models)
    registry.write_card(dataclasses.replace(card, preprocess=spec.to_dict() | {"size": card.spec.size}), tmp_path)
    for suffix in (".keras", ".onnx"):
        shutil.copy(tiny_models / f"cnn_small{suffix}", tmp_path)
    with pytest.raises(ModelIntegrityError):
        Predictor.load("cnn_small", tmp_path)


def test_train_localiser_writes_a_working_onnx_file_and_card(tiny_data, tmp_path):
    from core.learning.framing import train_localiser
    from core.serving.registry import sha256_of

    path = tmp_path / "framing_localiser.onnx"
    card = train_localiser(tiny_data, epochs=1, path=path, log=lambda *_: None)
    assert card["sha256"] == sha256_of(path) and card["training"]["train_images"] > 0
    assert set(card["validation"]) >= {"centre_mae", "log_size_mae"}
    outputs = framing.FramingLocaliser(path).predict([xray_like(1, False, 96), xray_like(2, True, 140)])
    assert outputs.shape == (2, 4) and np.isfinite(outputs).all()


@requires_localiser
def test_framed_training_and_serving_give_the_same_tensor(tiny_data):
    spec = PreprocessSpec(48, clahe=True, frame=framing.shipped_localiser_sha256(), frame_side=0.8)
    example = data.list_examples(tiny_data, "train")[3]
    training_tensor = data.load_set([example], spec).inputs[0]
    loaded = load_model_input(example.path.read_bytes(), spec)
    np.testing.assert_array_equal(training_tensor, loaded.tensor)
    np.testing.assert_array_equal(preprocess(loaded.decoded.pixels, spec), loaded.tensor)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


@requires_real_data
@requires_localiser
def test_shipped_localiser_finds_the_same_lung_field_in_a_tighter_framing():
    """On held-out X-rays cut to 70% around the lung field (the withheld period's framing), the
    standard frame covers the same anatomy as on the uncut X-ray: the framing cue is gone."""
    _, validation = data.patient_split(real_data_dir())
    _, grays = data.decode_grays(validation[::8])
    localiser = framing.localiser(framing.shipped_localiser_sha256())
    side = 0.7
    overlaps, sizes = [], []
    for gray in grays:
        h, w = gray.shape
        cut = lung_field_crop(side)(gray)
        top, left, _, _ = lung_field_box(h, w, side)
        whole, framed = localiser.box(gray), localiser.box(cut)
        # The cut image's box in the uncut image's pixels.
        mapped = (top + framed.top * side, left + framed.left * side, top + framed.bottom * side,
                  left + framed.right * side)
        overlaps.append(_iou((whole.top, whole.left, whole.bottom, whole.right), mapped))
        sizes.append(localiser.predict([cut])[0][2])
    # The cut keeps 70% of each side and the standard frame 75%, so even a perfect localiser
    # overlaps by 0.49 / 0.5625 = 0.87 at most; reading both images whole would give 0.49.
    assert np.median(overlaps) > 0.7
    # The 70% cut is recognised as such: the frame is about 1/0.7 of the cut.
    assert np.median(sizes) == pytest.approx(np.log(1 / side), abs=0.1)


def _iou(a, b) -> float:
    rows = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    cols = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = rows * cols
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@requires_localiser
def test_a_framed_model_screens_its_standard_frame_and_maps_heat_there(tiny_data, tmp_path, monkeypatch):
    from core.learning.train import TrainConfig, train
    from core.serving.predictor import Predictor

    train(TrainConfig(arch="cxrnet", data_dir=tiny_data, epochs=1, size=64, models_dir=tmp_path,
                      frame_side=framing.STANDARD_SIDE),
          log=lambda *_: None)
    predictor = Predictor.load("cxrnet", tmp_path)
    assert predictor.card.preprocess["frame"]["sha256"] == framing.shipped_localiser_sha256()
    raw = encode(xray_like(5, True, 160))
    loaded = load_model_input(raw, predictor.spec)
    box = loaded.frame
    assert (box.bottom - box.top) < 160 and (box.right - box.left) < 160  # a training-like X-ray is cut
    assert predictor.screen(raw).probability == pytest.approx(
        predictor.probabilities(loaded.tensor[None])[0], abs=1e-6)
    # A map with evidence everywhere in the model's input shows exactly the standard frame.
    monkeypatch.setattr(predictor, "_heatmap_from", lambda cams, image: np.ones(image.shape[:2], np.float32))
    heat = predictor.screen(raw, heatmap=True).heatmap
    assert heat.shape == loaded.decoded.pixels.shape
    assert predictor.screen(raw).frame == box  # for the overlay: the part of the X-ray the model read
    inside = np.zeros(heat.shape, bool)
    inside[box.top:box.bottom, box.left:box.right] = True
    assert heat[inside].min() == pytest.approx(1.0) and heat[~inside].max() == 0


def test_training_a_framed_model_without_a_localiser_trains_the_localiser_first(tiny_data, tmp_path, monkeypatch):
    from core.learning import framing as localiser_training
    from core.learning.train import TrainConfig, train
    from core.serving.registry import sha256_of

    monkeypatch.setattr(framing, "LOCALISER_PATH", tmp_path / "framing_localiser.onnx")
    monkeypatch.setattr(localiser_training, "EPOCHS", 2)  # a test of the plumbing, not of the localiser
    card = train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=1, size=32, models_dir=tmp_path,
                             frame_side=0.8), log=lambda *_: None)
    assert framing.LOCALISER_PATH.exists()
    assert card.preprocess["frame"] == {"localiser": "framing_localiser.onnx",
                                        "sha256": sha256_of(framing.LOCALISER_PATH), "side": 0.8}
