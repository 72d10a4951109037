"""Explanations that can fail: known-answer models, weight randomisation, every zoo model."""
import cv2
import keras
import numpy as np
import pytest
from conftest import xray_like
from scipy.stats import spearmanr

from core.analysis import explain
from core.learning import gradcam, keras_model
from core.learning.zoo import ARCHITECTURES, get_architecture
from core.serving import registry
from core.serving.heatmap import occlusion, overlay, to_png
from core.serving.imaging import preprocess
from core.serving.predictor import Predictor

SIZE = 32
REGION = (slice(4, 12), slice(4, 12))  # the region that decides, top left
DECOY = (slice(20, 28), slice(20, 28))  # equally striking, bottom right, irrelevant


def bright_and_dark_model() -> keras.Model:
    """Channel 0 responds to bright pixels, channel 1 to dark ones; only channel 0 reaches the output."""
    inputs = keras.Input((SIZE, SIZE, 1))
    features = keras.layers.Conv2D(2, 1, activation="relu", name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    output = keras.layers.Dense(1, activation="sigmoid")(pooled)
    model = keras.Model(inputs, output)
    model.get_layer("features").set_weights([np.array([1.0, -1.0]).reshape(1, 1, 1, 2), np.array([0.0, 1.0])])
    model.layers[-1].set_weights([np.array([[4.0], [0.0]]), np.array([-2.0])])
    return model


def region_only_model() -> keras.Model:
    """The output sees the top-left region alone (cropped), whatever the rest holds."""
    inputs = keras.Input((SIZE, SIZE, 1))
    crop = keras.layers.Cropping2D(((REGION[0].start, SIZE - REGION[0].stop), (REGION[1].start, SIZE - REGION[1].stop)))
    pooled = keras.layers.GlobalAveragePooling2D()(crop(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    model.layers[-1].set_weights([np.array([[6.0]]), np.array([-3.0])])
    return model


def test_gradcam_peaks_where_the_deciding_feature_is():
    image = np.full((SIZE, SIZE, 1), 0.5, np.float32)
    image[REGION] = 1.0  # bright: the feature the output reads
    image[DECOY] = 0.0  # dark: a strong feature in a channel the output ignores
    heat = gradcam.gradcam(bright_and_dark_model(), image[None], "features")[0]
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert REGION[0].start <= peak[0] < REGION[0].stop and REGION[1].start <= peak[1] < REGION[1].stop
    assert heat[DECOY].max() < 0.6 * heat[REGION].mean()


def test_occlusion_peaks_in_the_only_region_that_decides():
    image = np.full((SIZE, SIZE, 1), 0.2, np.float32)
    image[REGION] = 1.0
    image[DECOY] = 1.0  # identical content, but the model never sees it
    heat = occlusion(region_only_model(), image)
    assert heat[REGION].mean() > 0.5
    assert heat[DECOY].max() == 0.0


def test_heat_maps_are_deterministic_and_input_sized():
    model = bright_and_dark_model()
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 1)).astype(np.float32)
    first, second = gradcam.gradcam(model, image), gradcam.gradcam(model, image)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (1, SIZE, SIZE) and 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(occlusion(model, image[0]), occlusion(model, image[0]))


def test_randomised_weights_change_the_shipped_models_heat_map():
    """Adebayo et al. 2018: a map that survives weight randomisation explains the input, not the model.

    Bound: they report rank correlations near 0 for methods that pass and above 0.8 for
    edge-detector-like ones; 0.5 separates the two with room for image structure."""
    model, card = keras_model.load(registry.default_model_name())
    spec = card.spec
    correlations = []
    for init in range(3):  # several random initialisations, seeded: one draw alone can be unlucky
        keras.utils.set_random_seed(init)
        randomised = keras.models.clone_model(model)  # same architecture, fresh random weights
        for seed in range(4):
            image = preprocess(xray_like(seed, bool(seed % 2), 256), spec)[None]
            trained, random = gradcam.gradcam(model, image)[0], gradcam.gradcam(randomised, image)[0]
            assert trained.std() > 0, "the trained model's heat map is blank"
            # A blank map after randomisation has nothing left of the trained one.
            correlations.append(spearmanr(trained.ravel(), random.ravel()).statistic if random.std() > 0 else 0.0)
    assert np.mean(np.abs(correlations)) < 0.5, correlations


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_zoo_model_explains_or_says_why_not(name):
    arch = get_architecture(name, size=64)
    model = arch.build(arch.preprocess, "none")
    image = preprocess(xray_like(1, True, 128), arch.preprocess)
    if name == "mlp":
        with pytest.raises(explain.ExplanationUnavailable, match="no spatial"):
            gradcam.gradcam(model, image[None])
        heat = occlusion(model, image)
    else:
        heat = gradcam.gradcam(model, image[None])[0]
    assert heat.shape == (64, 64) and np.isfinite(heat).all()


def test_the_exports_activation_maps_are_the_keras_layers_outputs():
    """Read from the shipped ONNX file in ONNX Runtime, no TensorFlow: the same numbers as the layer."""
    predictor = Predictor.load()
    activations = explain.LayerActivations(predictor)
    image = preprocess(xray_like(4, True, 256), predictor.spec)
    network = predictor.model
    for keras_name in ("stage0_out", "stage3_out"):
        onnx_name = next(n.name for n in activations.layers if n.name.split("/")[-1].startswith(keras_name))
        served = activations(image, onnx_name)
        expected = keras.Model(network.inputs, network.get_layer(keras_name).output)(image[None]).numpy()[0]
        assert served.shape == expected.shape
        np.testing.assert_allclose(served, expected, atol=1e-3 * max(1.0, float(np.abs(expected).max())))


def test_a_network_without_spatial_layers_is_explained_by_occlusion_in_onnx_runtime():
    predictor = Predictor.load("mlp")
    assert explain.method_for(predictor) == "occlusion"
    with pytest.raises(explain.ExplanationUnavailable, match="no spatial"):
        explain.LayerActivations(predictor)
    image = preprocess(xray_like(5, True, 128), predictor.spec)
    np.testing.assert_allclose(explain.explain(predictor, image), occlusion(predictor.model, image), atol=1e-3)


def test_nested_backbone_layers_can_be_chosen():
    arch = get_architecture("backbone", size=64)
    model = arch.build(arch.preprocess, "none")
    nested = [ref.name for ref in gradcam.spatial_layers(model) if "/" in ref.name]
    assert gradcam.default_layer(model).name in nested
    heat = gradcam.gradcam(model, preprocess(xray_like(2, True), arch.preprocess)[None], nested[len(nested) // 2])
    assert heat.shape == (1, 64, 64)


def test_overlay_has_the_original_size_and_encodes_as_png():
    gray = xray_like(3, True, 300)[:, :250]
    heat = np.zeros((32, 32), np.float32)
    heat[:16] = 1.0
    blended = overlay(gray, heat, opacity=0.5)
    assert blended.shape == (300, 250, 3) and blended.dtype == np.uint8
    decoded = cv2.imdecode(np.frombuffer(to_png(blended), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (300, 250, 3)
    # The hot top half is red-shifted against the cold bottom half (JET: red hot, blue cold).
    assert blended[:100, :, 0].mean() > blended[200:, :, 0].mean()


def test_focus_shares_of_a_heat_map_in_the_top_band():
    heat = np.zeros((100, 100))
    heat[:5] = 1.0
    shares = explain.focus_shares(heat)
    assert shares == {"inside": 0.0, "outside": 1.0, "top_band": 1.0}
