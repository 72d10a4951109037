"""The serving core: ONNX parity with Keras, heat maps without gradients, hash checks,
and screening that never imports TensorFlow."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, encode, real_data_dir, requires_real_data, run_core, xray_like

from core.serving import registry
from core.serving.predictor import Predictor
from core.serving.registry import ModelIntegrityError

PARITY_IMAGES = 96
PARITY_TOLERANCE = 1e-4
NO_TENSORFLOW = """
import sys
{body}
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "jax", "torch"))
assert not leaked, leaked[:5]
print("no tensorflow")
"""


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)


def test_screening_a_file_with_a_heat_map_imports_no_tensorflow(tmp_path):
    image = tmp_path / "chest.jpeg"
    image.write_bytes(encode(xray_like(4, True, 512)))
    body = """
from core import Predictor
from core.serving import screening
predictor = Predictor.load()
assert predictor.runtime == "onnx", predictor.runtime
[row] = screening.screen_paths(predictor, [sys.argv[1]], heatmaps=True)
assert row.status == "ok" and row.result.heatmap is not None and row.result.heatmap.max() > 0, row
"""
    done = _run_python(NO_TENSORFLOW.format(body=body), str(image))
    assert done.returncode == 0 and "no tensorflow" in done.stdout, done.stderr[-2000:]


def test_the_screen_command_imports_no_tensorflow(tmp_path):
    image = tmp_path / "chest.jpeg"
    image.write_bytes(encode(xray_like(5, False, 400)))
    # -X importtime lists every module the command imports, on stderr.
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "core", "screen", str(image),
                           "--heatmaps", str(tmp_path / "maps")], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "import time:" in line}
    assert "onnxruntime" in imported and "core.serving.predictor" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}
    assert (tmp_path / "maps" / "chest.png").stat().st_size > 0
    assert "oneDNN" not in done.stderr and "absl" not in done.stderr


def test_home_and_screen_pages_import_no_tensorflow():
    body = """
from pathlib import Path
from streamlit.testing.v1 import AppTest
from conftest import encode, xray_like
for name in ("home", "screen"):
    app = AppTest.from_file(str(Path("app_pages") / f"{name}.py"), default_timeout=120)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    if name == "screen":  # the server path (on this device runs in the browser: tests/test_on_device.py)
        next(radio for radio in app.radio if radio.label == "Where to screen").set_value("Upload to the server").run()
        app.file_uploader[0].set_value(("chest.jpeg", encode(xray_like(1, True, 256)), "image/jpeg"))
        app.run()
        assert not app.exception, [e.value for e in app.exception]
        assert any(m.label == "Probability of pneumonia" for m in app.metric)
"""
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW.format(body=body)], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    assert done.returncode == 0 and "no tensorflow" in done.stdout, done.stderr[-2000:]


def test_every_shipped_model_has_a_hash_checked_onnx_file():
    for card in registry.cards():
        assert card.onnx["file"] == f"{card.name}.onnx"
        path = registry.verified_path(card.onnx["file"], card.onnx["sha256"])
        assert path == registry.models_dir() / card.onnx["file"]


def test_a_tampered_onnx_file_is_refused(tmp_path):
    name = registry.default_model_name()
    for file in (f"{name}.json", f"{name}.onnx", registry.MANIFEST):
        shutil.copy(registry.models_dir() / file, tmp_path / file)
    with open(tmp_path / f"{name}.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="does not match its card"):
        Predictor.load(name, tmp_path)


@requires_real_data
def test_onnx_matches_keras_on_validation_images_at_every_operating_point():
    from core.analysis import data, reports

    for name in registry.model_names():
        onnx = Predictor.load(name, runtime="onnx")
        keras = Predictor.load(name, runtime="keras")
        assert (onnx.runtime, keras.runtime) == ("onnx", "keras")
        examples = reports.split_examples(real_data_dir(), "validation")[::8][:PARITY_IMAGES]
        inputs = data.load_set(examples, onnx.spec).inputs
        p_onnx, p_keras = onnx.probabilities(inputs), keras.probabilities(inputs)
        assert np.max(np.abs(p_onnx - p_keras)) <= PARITY_TOLERANCE, name
        for point, threshold in onnx.operating_points.items():
            np.testing.assert_array_equal(p_onnx >= threshold, p_keras >= threshold, err_msg=f"{name} {point}")


def test_the_onnx_class_activation_map_equals_grad_cam_of_the_keras_model():
    from core.learning import gradcam

    predictor = Predictor.load()  # the default: global pooling then one dense unit
    assert predictor.card.onnx["heatmap"] == "cam"
    for seed in (1, 2):
        image = (xray_like(seed, True, predictor.spec.size) / 255.0).astype(np.float32)[..., np.newaxis]
        served = predictor.heatmap(image)
        keras_map = gradcam.gradcam(predictor.model, image[np.newaxis])[0]
        assert served.shape == keras_map.shape == image.shape[:2]
        np.testing.assert_allclose(served, keras_map, atol=2e-3)


def test_the_card_records_the_serving_file():
    card = registry.load_card(registry.default_model_name())
    on_disk = registry.models_dir() / card.onnx["file"]
    assert card.onnx["file_bytes"] == on_disk.stat().st_size
    assert json.loads((registry.models_dir() / registry.MANIFEST).read_text())["default"] == card.name


def test_an_ensemble_is_one_model_whose_onnx_matches_keras_and_whose_map_is_the_members_mean(tiny_data, tmp_path):
    from core.learning import ensemble, gradcam
    from core.learning.train import TrainConfig, train

    card = train(TrainConfig(arch="cxrnet", data_dir=tiny_data, epochs=1, size=64, models_dir=tmp_path,
                             ensemble=2, max_train_images=24), log=lambda *_: None)
    assert card.architecture == "ensemble of 2 cxrnet" and card.training["ensemble"]["init_seeds"] == [42, 1042]
    served, keras = Predictor.load("cxrnet", tmp_path), Predictor.load("cxrnet", tmp_path, runtime="keras")
    assert served.runtime == "onnx" and card.onnx["heatmap"] == "cam"
    members = ensemble.members(keras.model)
    assert len(members) == 2
    inputs = np.random.default_rng(0).random((4, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(served.probabilities(inputs), keras.probabilities(inputs), atol=PARITY_TOLERANCE)
    # The ensemble's output is the sigmoid of its members' mean logit.
    logits = [np.log(p / (1 - p)) for p in (m(inputs, training=False).numpy().reshape(-1) for m in members)]
    np.testing.assert_allclose(keras.model(inputs, training=False).numpy().reshape(-1),
                               1 / (1 + np.exp(-np.mean(logits, axis=0))), atol=1e-5)
    member_maps = [gradcam.gradcam(m, inputs[:1])[0] for m in members]
    expected = np.mean(member_maps, axis=0) / np.mean(member_maps, axis=0).max()
    np.testing.assert_allclose(served.heatmap(inputs[0]), expected, atol=2e-3)
    # A fresh process (an analyst page, `core bench`) loads the Keras file without having trained one,
    # through the runtime the learning layer offers.
    done = _run_python("import sys; from pathlib import Path; import core.learning; "
                       "from core.serving.predictor import Predictor; "
                       "print(Predictor.load('cxrnet', Path(sys.argv[1]), runtime='keras').model.name)", str(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == "cxrnet", done.stderr[-2000:]


def test_commands_that_load_tensorflow_print_none_of_its_start_up_notices(tiny_data):
    done = run_core("evaluate", "--data", str(tiny_data), "--split", "test", "--model", "cnn_small", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cnn_small" in done.stdout
    assert "oneDNN" not in done.stderr and "absl" not in done.stderr and "cpu_feature_guard" not in done.stderr
