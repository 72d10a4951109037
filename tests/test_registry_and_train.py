"""Training on a tiny generated set, the card it writes, and the registry's hash check."""
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY_SIZE, run_core

from core.analysis import data, reports
from core.learning import keras_model
from core.learning.pipeline import LIT_AUC
from core.serving import registry
from core.serving.card import ModelCard
from core.serving.predictor import Predictor

CARD_KEYS = {"name", "architecture", "preprocess", "parameters", "calibration", "operating_points", "training",
             "validation", "file", "file_bytes", "sha256"}


def test_one_epoch_writes_model_card_reports_and_profile(tiny_models):
    card = registry.load_card("cnn_small", tiny_models)
    stored = json.loads((tiny_models / "cnn_small.json").read_text())
    assert CARD_KEYS <= set(stored) and registry.ModelCard.from_dict(stored) == card
    assert card.onnx["file"] == "cnn_small.onnx" and card.spec.size == 32
    assert card.preprocess["size"] == 32
    assert set(card.operating_points) == {"balanced", "screening"}
    assert card.training["epochs_run"] == 1
    assert card.training["split"]["by"] == "patient"
    assert card.sha256 == registry.sha256_of(tiny_models / card.file)
    assert registry.manifest(tiny_models) == {"default": "cnn_small", "models": ["cnn_small"],
                                                  "chosen_by": registry.DEFAULT_RULE}
    history = registry.load_report("cnn_small", "history", tiny_models)
    for key in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "learning_rate"):
        assert len(history[key]) == 1, key
    profile = registry.load_shared(registry.PROFILE, tiny_models)
    train_counts = profile["splits"]["train"]["counts"]
    validation_counts = profile["splits"]["validation"]["counts"]
    assert train_counts["NORMAL"] + validation_counts["NORMAL"] == 30
    assert len(profile["splits"]["train"]["pixel_histograms"]["NORMAL"]) == profile["splits"]["train"]["histogram_bins"]


@pytest.mark.parametrize("patience_from_epoch, epochs_run", [(0, 2), (3, 4)])
def test_early_stopping_watches_only_from_the_recipes_epoch(tiny_data, tmp_path, patience_from_epoch, epochs_run):
    from core.learning.train import TrainConfig, train

    # A learning rate of 0 never improves validation AUC after the first epoch, so patience 1 stops
    # at epoch 2, unless early stopping only starts watching later.
    card = train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=4, size=TINY_SIZE, learning_rate=0.0,
                             models_dir=tmp_path, overrides={"patience": 1,
                                                              "patience_from_epoch": patience_from_epoch}),
                 log=lambda *_: None)
    assert card.training["epochs_run"] == epochs_run
    assert card.training["recipe"]["patience_from_epoch"] == patience_from_epoch


def test_fine_tuning_starts_from_the_trained_models_weights(tiny_models, tiny_data, tmp_path):
    from core.learning.train import TrainConfig, train

    source = tiny_models / "cnn_small.keras"
    # At a learning rate of 0 the weights cannot move (cnn_small has no batch-norm statistics), so the
    # fine-tuned file holds the source's weights exactly, where a fresh initialisation would not.
    card = train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=1, size=TINY_SIZE, learning_rate=0.0,
                             weights=str(source), models_dir=tmp_path, name="tuned"), log=lambda *_: None)
    tuned = keras_model.load("tuned", tmp_path)[0].get_weights()
    trained = keras.saving.load_model(source, compile=False).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(tuned, trained, strict=True))
    # The card names the source and its hash, not the path it was read from (paths are the operator's).
    assert card.training["fine_tuned_from"] == {"model": "cnn_small",
                                                "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    assert card.training["weights"] == "none" and str(tiny_models) not in json.dumps(card.to_dict())
    assert "fine-tuned from cnn_small" in card.summary


@pytest.mark.parametrize("arch, size, reason", [
    ("cnn_reg", TINY_SIZE, "is a cnn_small, and this run trains a cnn_reg"),  # the same weight shapes
    ("cnn_small", 2 * TINY_SIZE, r"reads X-rays otherwise than this run \(size\)"),
])
def test_fine_tuning_refuses_another_architecture_or_preprocessing(tiny_models, arch, size, reason):
    from core.learning.train import fine_tuning_source
    from core.learning.zoo import get_architecture

    with pytest.raises(ValueError, match=reason):
        fine_tuning_source(get_architecture(arch, size), str(tiny_models / "cnn_small.keras"))


def test_fine_tuning_refuses_a_file_its_card_did_not_hash(tiny_models, tmp_path):
    from core.learning.train import fine_tuning_source
    from core.learning.zoo import get_architecture

    for name in ("cnn_small.json", "cnn_small.keras"):
        shutil.copy(tiny_models / name, tmp_path / name)
    with (tmp_path / "cnn_small.keras").open("ab") as file:
        file.write(b"\0")
    with pytest.raises(registry.ModelIntegrityError, match="does not match its card"):
        fine_tuning_source(get_architecture("cnn_small", TINY_SIZE), str(tmp_path / "cnn_small.keras"))


def _reading_no_images(*_args, **_kwargs):
    raise AssertionError("images were read before the run was refused")


@pytest.mark.parametrize("refused, reason", [
    ({"ensemble": 2}, "drop --ensemble$"), ({"lr_auto": True}, "drop --lr auto$"),
    ({"overrides": {"pretrain_epochs": 1}}, "drop --set pretrain_epochs$"),
])
def test_a_fine_tuned_run_is_one_network_at_a_given_learning_rate(tiny_models, tiny_data, tmp_path, monkeypatch,
                                                                  refused, reason):
    from core.learning.train import TrainConfig, train

    monkeypatch.setattr("core.learning.train.load_split", _reading_no_images)
    with pytest.raises(ValueError, match=reason):
        train(TrainConfig(arch="cnn_small", data_dir=tiny_data, size=TINY_SIZE, epochs=1, models_dir=tmp_path,
                          weights=str(tiny_models / "cnn_small.keras"), **refused), log=lambda *_: None)


def test_a_fine_tuned_run_may_not_overwrite_its_source(tiny_models, tiny_data, tmp_path, monkeypatch):
    from core.learning.train import TrainConfig, train

    for name in ("cnn_small.json", "cnn_small.keras"):
        shutil.copy(tiny_models / name, tmp_path / name)
    # The models folder from the setting, the source by a relative path: the two resolve to one file.
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("core.learning.train.load_split", _reading_no_images)
    with pytest.raises(ValueError, match="would overwrite its source cnn_small.keras"):
        train(TrainConfig(arch="cnn_small", data_dir=tiny_data, size=TINY_SIZE, epochs=1, weights="cnn_small.keras"),
              log=lambda *_: None)


def test_foreign_weights_are_refused_before_images_are_read(tiny_data, tmp_path, monkeypatch):
    from core.learning.train import TrainConfig, train

    monkeypatch.setattr("core.learning.train.load_split", _reading_no_images)
    with pytest.raises(ValueError, match="cxrnet starts from scratch"):
        train(TrainConfig(arch="cxrnet", data_dir=tiny_data, size=TINY_SIZE, models_dir=tmp_path, weights="imagenet"),
              log=lambda *_: None)


@pytest.mark.parametrize("overrides, reason", [
    ({"reflection_fill": True, "augment": "strong", "augment_before_contrast": True}, "set reflections too"),
    ({"reflections": 0.5, "reflection_peak": 1.5, "augment": "strong"}, "share of white"),
    ({"reflections": 0.5, "reflection_fill": True, "augment": "strong"}, "set augment_before_contrast too"),
    ({"reflections": 0.5, "augment": "none"}, "choose an augment level"),
    ({"lit_validation": True, "augment": "strong"}, "lit_validation lights validation X-rays"),
])
def test_reflection_settings_that_do_not_fit_are_refused_before_images_are_read(tiny_data, tmp_path, monkeypatch,
                                                                                 overrides, reason):
    from core.learning.train import TrainConfig, train

    monkeypatch.setattr("core.learning.train.load_split", _reading_no_images)
    with pytest.raises(ValueError, match=reason):
        train(TrainConfig(arch="cnn_small", data_dir=tiny_data, size=TINY_SIZE, epochs=1, models_dir=tmp_path,
                          overrides=overrides), log=lambda *_: None)


def test_fine_tuning_refuses_a_file_its_card_does_not_describe(tiny_models, tmp_path):
    from core.learning.train import fine_tuning_source
    from core.learning.zoo import get_architecture

    shutil.copy(tiny_models / "cnn_small.json", tmp_path / "other.json")  # its card names cnn_small.keras
    shutil.copy(tiny_models / "cnn_small.keras", tmp_path / "other.keras")
    with pytest.raises(ValueError, match="the card beside other.keras describes cnn_small.keras"):
        fine_tuning_source(get_architecture("cnn_small", TINY_SIZE), str(tmp_path / "other.keras"))


def test_weights_other_than_a_trained_model_are_refused_but_for_the_backbone():
    from core.learning.pipeline import initial_network
    from core.learning.zoo import get_architecture

    with pytest.raises(ValueError, match="cxrnet starts from scratch"):
        initial_network(get_architecture("cxrnet", TINY_SIZE), "imagenet")


def test_deterministic_training_writes_the_same_weights_twice(tiny_data, tmp_path):
    # In a fresh process each time, as a user runs it: op determinism is process-wide. The default's
    # levers (two framings per image, augmentation before CLAHE) run under it without a missing kernel.
    def run(folder: str) -> tuple[ModelCard, dict, list[np.ndarray]]:
        done = run_core("train", "--arch", "cnn_small", "--data", str(tiny_data), "--epochs", "2",
                        "--size", str(TINY_SIZE), "--deterministic", "--set", "augment=scale",
                        "--set", "framing_consistency=4", "--set", "augment_before_contrast=true",
                        "--models-dir", str(tmp_path / folder), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        model, card = keras_model.load("cnn_small", tmp_path / folder)
        return card, registry.load_report("cnn_small", "history", tmp_path / folder), model.get_weights()

    (first, first_history, first_weights), (second, second_history, second_weights) = run("first"), run("second")
    assert first.training["deterministic"] and "--deterministic" in first.training["command"]
    assert first_history == second_history
    assert (first.validation, first.calibration) == (second.validation, second.calibration)
    # The weights themselves, not only the curves (the ONNX file's hash differs: its node names do).
    assert len(first_weights) == len(second_weights)
    assert all(np.array_equal(a, b) for a, b in zip(first_weights, second_weights))


@pytest.mark.parametrize("weight_average", [0.0, 0.9999999])
def test_weight_averaging_validates_and_keeps_the_averaged_weights(tiny_data, tmp_path, weight_average):
    from core.learning.train import TrainConfig, train

    # A high, constant learning rate moves the weights every step. An average with a momentum near 1
    # stays at the first step's weights, so validation, which must see the average, barely changes.
    card = train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=3, size=TINY_SIZE, learning_rate=0.01,
                             models_dir=tmp_path, overrides={"lr_schedule": "constant",
                                                              "weight_average": weight_average}),
                 log=lambda *_: None)
    val_loss = registry.load_report("cnn_small", "history", tmp_path)["val_loss"]
    spread = max(val_loss) - min(val_loss)
    assert spread < 1e-3 if weight_average else spread > 1e-2
    assert card.training["recipe"]["weight_average"] == weight_average
    # The file holds the weights that were validated at the best epoch: its loss there is the same.
    validation = data.load_set(reports.split_examples(tiny_data, "validation", card.split_seed), card.spec)
    p = np.clip(Predictor.load("cnn_small", tmp_path).raw_probabilities(validation.inputs), 1e-7, 1 - 1e-7)
    loss = -np.mean(validation.labels * np.log(p) + (1 - validation.labels) * np.log(1 - p))
    assert loss == pytest.approx(val_loss[card.training["best_epoch"] - 1], rel=1e-3)


LIT_SETTINGS = {"lr_schedule": "constant", "augment": "strong", "reflections": 0.5, "lit_validation": True}


def test_lit_validation_keeps_the_epoch_and_stops_by_the_pooled_auc_alone(tiny_data, tmp_path, monkeypatch):
    from core.learning import train as training

    # The pooled AUC scripted, peaking at epoch 3 whatever the network does: patience 2 then stops after
    # epoch 5, and the file must hold epoch 3's weights (a learning rate that moves them every epoch).
    # The plain AUC is scripted too, peaking elsewhere, so that its value at the kept epoch is known.
    scripted = [0.1, 0.2, 0.9, 0.3, 0.2, 0.1, 0.1]
    scripted_plain = [0.95, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8]

    class ScriptedPooledAUC(keras.callbacks.Callback):
        def __init__(self, *_):
            super().__init__()

        def on_epoch_end(self, epoch, logs=None):
            logs[LIT_AUC], logs["val_auc"] = scripted[epoch], scripted_plain[epoch]

    monkeypatch.setattr(training, "PooledValidationAUC", ScriptedPooledAUC)
    config = training.TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=len(scripted), size=TINY_SIZE,
                                  learning_rate=0.003, models_dir=tmp_path, overrides={**LIT_SETTINGS, "patience": 2})
    card = training.train(config, log=lambda *_: None)
    history = registry.load_report("cnn_small", "history", tmp_path)
    assert history[LIT_AUC] == scripted[:5] and card.training["epochs_run"] == 5
    assert card.training["best_epoch"] == 3
    # An ensemble's card gives each member's plain validation AUC at that kept epoch, not its best.
    ensemble = training.train(replace(config, ensemble=2, models_dir=tmp_path / "pair"), log=lambda *_: None)
    assert ensemble.training["ensemble"]["member_best_validation_auc"] == [0.6, 0.6]
    validation = data.load_set(reports.split_examples(tiny_data, "validation", card.split_seed), card.spec)
    p = np.clip(Predictor.load("cnn_small", tmp_path).raw_probabilities(validation.inputs), 1e-7, 1 - 1e-7)
    loss = -np.mean(validation.labels * np.log(p) + (1 - validation.labels) * np.log(1 - p))
    assert loss == pytest.approx(history["val_loss"][2], rel=1e-4)


def test_lit_validation_scores_the_averaged_weights_that_keras_validates(tiny_data, tmp_path, monkeypatch):
    from core.learning import train as training

    # The pooled set replaced by the plain X-rays under opposite labels: on the same weights its AUC is
    # then one less the plain one. A high learning rate moves the raw weights every step while an average with a
    # momentum near 1 stays put, so scoring the raw weights instead would break the relation.
    monkeypatch.setattr(training, "lit_validation_set", lambda val_set, *_: (val_set.inputs, 1 - val_set.labels))
    training.train(training.TrainConfig(
        arch="cnn_small", data_dir=tiny_data, epochs=3, size=TINY_SIZE, learning_rate=0.01, models_dir=tmp_path,
        overrides={**LIT_SETTINGS, "weight_average": 0.9999999}), log=lambda *_: None)
    history = registry.load_report("cnn_small", "history", tmp_path)
    np.testing.assert_allclose(history[LIT_AUC], 1 - np.array(history["val_auc"]), atol=2e-3)


def test_weight_average_outside_zero_to_one_fails_loudly(tiny_data, tmp_path):
    from core.learning.train import TrainConfig, train

    with pytest.raises(ValueError, match="weight_average"):
        train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=1, size=TINY_SIZE, models_dir=tmp_path,
                          overrides={"weight_average": 1.0}), log=lambda *_: None)


def test_card_summary_says_what_training_added_to_the_architecture(tiny_models):
    card = registry.load_card("cnn_small", tiny_models)
    assert card.summary == card.description
    spec = replace(card.spec, frame="ab" * 32, frame_side=0.75, equalise=True)
    training = {**card.training, "recipe": {**card.training["recipe"], "pretrain_epochs": 40,
                                            "augment_before_contrast": True, "sharpness_widths": [0.01, 0.02],
                                            "max_gamma": 1.7, "weight_average": 0.998, "patience_from_epoch": 15},
                "ensemble": {"members": 3}}
    summary = replace(card, preprocess=spec.to_dict(), training=training).summary
    assert summary == (f"{card.description}; every X-ray cut to the localiser's standard frame (75%); grey levels "
                       "histogram-equalised; augmented before CLAHE; sharpened at 2 scales; "
                       "exposure augmented up to gamma 1.7; weights averaged (momentum 0.998); "
                       "early stopping from epoch 15; SimCLR pre-training (40 epochs); "
                       "ensemble of 3 initialisations")


def test_model_loads_in_safe_mode_and_predicts(tiny_models):
    model = keras.saving.load_model(tiny_models / "cnn_small.keras", safe_mode=True)
    assert model.output.shape == (None, 1)


@pytest.mark.parametrize("file", ["cnn_small.keras", "cnn_small.onnx"])
def test_tampered_model_is_refused(tiny_models, tmp_path, file):
    shutil.copytree(tiny_models, tmp_path / "m")
    folder = tmp_path / "m"
    for runtime in ("onnx", "keras"):
        Predictor.load("cnn_small", folder, runtime=runtime)  # intact: loads
    with open(folder / file, "ab") as handle:
        handle.write(b"tampered")
    runtime = "keras" if file.endswith(".keras") else "onnx"
    with pytest.raises(registry.ModelIntegrityError, match=f"{file} does not match its card"):
        Predictor.load("cnn_small", folder, runtime=runtime)


def _with_a_copy_of_higher_validation_auc(tiny_models, folder: Path, name: str) -> ModelCard:
    """The tiny models folder plus NAME: the same file, carded with validation AUC 2.0."""
    shutil.copytree(tiny_models, folder)
    card = registry.load_card("cnn_small", folder)
    shutil.copy(folder / "cnn_small.keras", folder / f"{name}.keras")
    registry.write_card(replace(card, name=name, file=f"{name}.keras", validation={**card.validation, "auc": 2.0}),
                        folder)
    return card


def test_manifest_default_is_the_best_validation_auc(tiny_models, tmp_path):
    _with_a_copy_of_higher_validation_auc(tiny_models, tmp_path / "m", "better")
    assert registry.update_manifest(tmp_path / "m") == {"default": "better", "models": ["better", "cnn_small"],
                                                  "chosen_by": registry.DEFAULT_RULE}


def test_manifest_default_is_chosen_among_the_models_with_a_current_shift_check(tiny_models, tmp_path):
    folder = tmp_path / "m"
    card = _with_a_copy_of_higher_validation_auc(tiny_models, folder, "fragile")
    shift = lambda auc: {"sha256": card.sha256, "summary": {"mean_auc": auc}}
    registry.save_report("cnn_small", "shift", shift(0.9), folder)
    # A newly trained model, unchecked, does not become the default by its validation AUC.
    assert registry.update_manifest(folder) == {"default": "cnn_small", "models": ["cnn_small", "fragile"],
                                                  "chosen_by": registry.DEFAULT_RULE}
    registry.save_report("fragile", "shift", shift(0.6), folder)
    assert registry.update_manifest(folder)["default"] == "cnn_small"  # the better one under shift
    registry.save_report("cnn_small", "shift", {**shift(0.9), "sha256": "an older file"}, folder)
    assert registry.update_manifest(folder)["default"] == "fragile"  # a stale check does not count


def _framing_shift(card: ModelCard, specificity: float, auc: float) -> dict:
    return {"sha256": card.sha256, "summary": {"mean_auc": 0.99, "framing_mean_auc": auc,
                                               "framing_mean_specificity_at_screening_sensitivity": specificity}}


def test_manifest_default_ranks_by_specificity_at_sensitivity_then_breaks_ties_by_framing_auc(tiny_models, tmp_path):
    folder = tmp_path / "m"
    card = _with_a_copy_of_higher_validation_auc(tiny_models, folder, "sharper")
    registry.save_report("cnn_small", "shift", _framing_shift(card, 0.90, 0.995), folder)
    registry.save_report("sharper", "shift", _framing_shift(card, 0.93, 0.980), folder)
    assert registry.update_manifest(folder)["default"] == "sharper"  # 0.03 apart: the better ranking at 0.98
    registry.save_report("sharper", "shift", _framing_shift(card, 0.909, 0.980), folder)
    assert registry.update_manifest(folder)["default"] == "cnn_small"  # 0.009 apart, a tie: the better AUC
    registry.save_report("sharper", "shift", _framing_shift(card, 0.909, 0.996), folder)
    assert registry.update_manifest(folder)["default"] == "sharper"


def test_manifest_default_must_screen_within_the_latency_bound(tiny_models, tmp_path):
    folder = tmp_path / "m"
    card = _with_a_copy_of_higher_validation_auc(tiny_models, folder, "slow")
    registry.save_report("cnn_small", "shift", _framing_shift(card, 0.90, 0.99), folder)
    registry.save_report("slow", "shift", _framing_shift(card, 0.95, 0.99), folder)
    row = lambda name, ms: {"model": name, "runtime": "onnx", "p50_ms": ms}
    registry.save_shared(registry.BENCHMARK, {"rows": [row("cnn_small", 5.0), row("slow", 39.0),
                                                       {**row("slow", 90.0), "runtime": "keras"}]}, folder)
    assert registry.update_manifest(folder)["default"] == "slow"  # the Keras row is not what screening runs
    registry.save_shared(registry.BENCHMARK, {"rows": [row("cnn_small", 5.0), row("slow", 41.0)]}, folder)
    assert registry.update_manifest(folder) == {"default": "cnn_small", "models": ["cnn_small", "slow"],
                                                  "chosen_by": registry.DEFAULT_RULE}


def test_backbone_loads_pretrained_weights_from_a_file(tmp_path):
    """`--weights` takes 'imagenet' (Keras' published file, needs the internet) or a local weights file."""
    import numpy as np

    from core.learning.zoo import get_architecture

    arch = get_architecture("backbone", size=64)
    donor = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), include_top=False, weights=None,
                                                include_preprocessing=False, pooling="avg")
    path = tmp_path / "pretrained.weights.h5"
    donor.save_weights(path)
    model = arch.build(arch.preprocess, str(path))
    nested = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for mine, theirs in zip(nested.get_weights(), donor.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
