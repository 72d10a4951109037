"""An ensemble assembled from trained files: members calibrated under shift, then averaged."""
import numpy as np
import pytest

from core.analysis import data
from core.analysis.reports import split_examples
from core.analysis.shift import SHIFTS
from core.learning.ensemble import assemble, combined_probabilities
from core.serving import registry
from core.serving.calibration import logit, sigmoid
from core.serving.imaging import preprocess
from core.serving.predictor import Predictor


@pytest.fixture(scope="module")
def two_members(tiny_data, tmp_path_factory):
    from core.learning.train import TrainConfig, train

    folders = []
    for init_seed in (7, 8):
        folder = tmp_path_factory.mktemp(f"member{init_seed}")
        train(TrainConfig(arch="cxrnet", data_dir=tiny_data, epochs=1, size=64, init_seed=init_seed, name="member",
                          models_dir=folder, max_train_images=24), log=lambda *_: None)
        folders.append(folder)
    return folders


def test_the_combination_is_the_sigmoid_of_the_members_mean_calibrated_logit():
    raw = [np.array([0.2, 0.9]), np.array([0.6, 0.5])]
    calibrations = [{"slope": 2.0, "intercept": 0.5}, {"slope": 1.0, "intercept": -1.0}]
    expected = sigmoid(((2 * logit(raw[0]) + 0.5) + (logit(raw[1]) - 1.0)) / 2)
    np.testing.assert_allclose(combined_probabilities(raw, calibrations), expected)


def test_an_assembled_ensemble_serves_what_its_calibrated_members_average_to(tiny_data, two_members, tmp_path):
    card = assemble([("member", folder) for folder in two_members], "assembled", tiny_data, tmp_path,
                    log=lambda *_: None)
    members = [Predictor.load("member", folder) for folder in two_members]
    calibrations = card.training["ensemble"]["member_calibrations"]
    assert len(calibrations) == 2 and all(c["method"] == "platt" for c in calibrations)
    assert [f["sha256"] for f in card.training["ensemble"]["member_files"]] == [m.card.sha256 for m in members]
    assert card.training["epoch_chosen_by"] == "validation AUC"
    assert [f["epoch_chosen_by"] for f in card.training["ensemble"]["member_files"]] == ["validation AUC"] * 2
    assert "under every acquisition shift" in card.calibration["fitted_on"]
    served = Predictor.load("assembled", tmp_path)
    assert served.runtime == "onnx" and card.onnx["heatmap"] == "cam" and card.architecture == "ensemble of 2 cxrnet"
    _, images = data.decode_grays(split_examples(tiny_data, "validation"))
    inputs = np.stack([preprocess(gray, served.spec) for gray in images])
    expected = combined_probabilities([m.raw_probabilities(inputs) for m in members], calibrations)
    np.testing.assert_allclose(served.raw_probabilities(inputs), expected, atol=1e-4)
    report = registry.load_report("assembled", "validation", tmp_path)
    held_out = report["ece_under_shift_held_out"]
    assert set(held_out) == {"fitted on plain validation", "fitted under shift"}
    assert all(set(eces) == set(SHIFTS) for eces in held_out.values())


def test_members_that_read_images_differently_are_refused(tiny_data, two_members, tiny_models):
    with pytest.raises(ValueError, match="read images alike"):
        assemble([("member", two_members[0]), ("cnn_small", tiny_models)], "mixed", tiny_data, two_members[0],
                 log=lambda *_: None)
