"""Robustness levers: mixup, balanced sampling, framing consistency, test-time zooms and the acquisition-shift check."""
from __future__ import annotations

import json
from dataclasses import replace

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.sharpening import STRENGTHS, SWEEP, WIDTHS
from benchmarks.shift import measure, measure_ensemble, measure_paired
from core.analysis import data, evaluation, reports
from core.analysis.shift import FRAMING_MEAN, PAIRED_METRICS, SHIFTS, paired_comparison, sharpen, shift_report
from core.cli import _recipe_settings
from core.learning.pipeline import (
    LIT_AUC,
    REFLECTION_PEAK,
    REFLECTION_RAMP,
    REFLECTION_WIDTH,
    FramingConsistency,
    PooledValidationAUC,
    augmentation,
    augmenter,
    bernoulli_js_divergence,
    detail_blur,
    filled_reflections,
    gaussian_blur,
    lit_copies,
    mixer,
    reflected_light,
    training_dataset,
    with_contrast_step,
)
from core.learning.train import TrainConfig, lit_validation_set, train
from core.learning.zoo import Recipe
from core.serving import photo, tta
from core.serving.imaging import PreprocessSpec, contrast_step, preprocess
from core.serving.predictor import Predictor
from tests.conftest import TINY_SIZE, xray_like


def test_mixup_mixes_images_labels_and_weights_with_the_same_share():
    # Each image is filled with its own label and weight-coded value, so after
    # mixing the pixel value must equal the mixed label exactly.
    labels = tf.constant([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    images = tf.reshape(labels, [-1, 1, 1, 1]) * tf.ones([8, 4, 4, 1])
    weights = 1.0 + 2.0 * labels
    tf.random.set_seed(0)
    mixed_images, mixed_labels, mixed_weights = mixer(0.4)(images, labels, weights)
    np.testing.assert_allclose(mixed_images[:, 0, 0, 0], mixed_labels, atol=1e-6)
    np.testing.assert_allclose(mixed_weights, 1.0 + 2.0 * mixed_labels.numpy(), atol=1e-5)
    # max(lam, 1 - lam): every mixed label stays on its own side of 0.5.
    assert np.all(np.abs(mixed_labels.numpy() - labels.numpy()) <= 0.5 + 1e-6)
    assert np.any((mixed_labels.numpy() > 0) & (mixed_labels.numpy() < 1))


def _one_epoch(recipe: Recipe, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inputs = np.zeros((len(labels), 4, 4, 1), np.float32)
    ds, steps = training_dataset(inputs, labels, recipe, batch_size=10, seed=1)
    batches = list(ds)
    assert len(batches) == steps == int(np.ceil(len(labels) / 10))
    return (np.concatenate([b[1].numpy() for b in batches]), np.concatenate([b[2].numpy() for b in batches]))


def test_balanced_sampling_draws_both_classes_equally_without_loss_weights():
    labels = np.array([0] * 40 + [1] * 360)
    drawn, weights = _one_epoch(Recipe(sampling="balanced"), labels)
    assert len(drawn) == 400
    assert 0.4 < drawn.mean() < 0.6  # 10% pneumonia in the data, half in the batches
    assert np.all(weights == 1.0)


def test_class_weight_sampling_keeps_the_data_mix_and_weights_the_rare_class():
    labels = np.array([0] * 40 + [1] * 360)
    drawn, weights = _one_epoch(Recipe(sampling="class_weights"), labels)
    assert drawn.mean() == pytest.approx(0.9)
    table = data.class_weights(labels)
    np.testing.assert_allclose(weights, [table[int(y)] for y in drawn])
    assert table[0] == pytest.approx(5.0) and table[1] == pytest.approx(400 / 720)


def test_zoom_crops_or_extends_the_frame_around_the_centre():
    image = np.zeros((40, 40, 1), np.float32)
    image[10:30, 10:30] = 1.0  # a centred square covering a quarter of the frame
    assert float(tta.zoom(image, 1.0).mean()) == pytest.approx(0.25)
    assert float(tta.zoom(image, 2.0).mean()) == pytest.approx(1.0, abs=1e-6)  # crop = the square
    looser = tta.zoom(image, 0.8)
    assert looser.shape == image.shape and looser.dtype == np.float32
    assert float(looser[15:25, 15:25].mean()) == pytest.approx(1.0)
    assert float(looser[:3, :3].mean()) == pytest.approx(0.0)  # reflected background


def test_averaging_over_zooms_is_a_mean_of_logits():
    image = np.zeros((1, 40, 40, 1), np.float32)
    image[:, 10:30, 10:30] = 0.8
    zooms = (1.0, 1.25)
    views = tta.views(image, zooms)
    assert views.shape == (2, 40, 40, 1)
    # A "model" whose output is the mean pixel: each zoom gives a known probability.
    per_view = views.mean(axis=(1, 2, 3))
    logit = np.mean([np.log(p / (1 - p)) for p in per_view])
    assert tta.average(per_view, zooms)[0] == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-6)
    assert tta.average(per_view[:1], (1.0,))[0] == pytest.approx(per_view[0])


def test_shifts_keep_shape_and_type_and_change_the_image():
    gray = (xray_like(3, True, 96)).astype(np.uint8)
    for name, shift in SHIFTS.items():
        shifted = shift(gray)
        assert shifted.shape == gray.shape and shifted.dtype == np.uint8, name
        assert (name == "none") == np.array_equal(shifted, gray), name


def test_shift_report_holds_thresholds_fixed_and_summarises_the_worst_case():
    labels = np.array([0] * 10 + [1] * 10)
    images = [xray_like(i, bool(y), 64).astype(np.uint8) for i, y in enumerate(labels)]
    spec = PreprocessSpec(32)
    oracle_darkness = lambda x: 1.0 - x.mean(axis=(1, 2, 3))  # synthetic pneumonia is hazier
    points = {"balanced": 0.5, "screening": 0.3}
    report = shift_report(oracle_darkness, images, labels, spec, points)
    rows = {r["shift"]: r for r in report["shifts"]}
    assert list(rows) == list(SHIFTS)
    baseline = oracle_darkness(np.stack([preprocess(g, spec) for g in images]))
    assert rows["none"]["auc"] == pytest.approx(evaluation.auc(labels, baseline))
    assert rows["none"]["balanced_accuracy"] == pytest.approx(evaluation.metrics_at(labels, baseline, 0.5)["accuracy"])
    shifted = [r for name, r in rows.items() if name != "none"]
    assert report["summary"]["worst_auc"] == min(r["auc"] for r in shifted)
    assert report["summary"]["worst_screening_specificity"] == min(r["screening_specificity"] for r in shifted)
    assert rows["none"]["ece"] == pytest.approx(evaluation.expected_calibration_error(labels, baseline)[0])
    assert report["summary"]["worst_ece"] == max(r["ece"] for r in shifted) > 0


def test_patient_resampling_draws_whole_patients():
    patients = ["a", "a", "b", "c", "c", "c"]
    counts = evaluation.patient_resample_weights(patients, rounds=300, seed=1)
    assert counts.shape == (300, 6)
    # Images of one patient are drawn together, and each round draws as many patients as there are.
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 3] == counts[:, 4]).all() and (counts[:, 4] == counts[:, 5]).all()
    assert (counts[:, [0, 2, 3]].sum(axis=1) == 3).all()
    assert counts[:, 0].mean() == pytest.approx(1.0, abs=0.15)


def test_paired_comparison_measures_the_lever_minus_the_base_on_the_same_patients():
    # 20 normal and 20 pneumonia patients, two images each. At the screening threshold of 0.3 the base
    # refers every normal child; under the 70% crop the lever clears 10 of the 20 normal patients.
    labels = np.repeat([0, 1], 40)
    patients = [f"p{i // 2}" for i in range(80)]
    base_scores = np.where(labels == 1, 0.8, 0.4)
    cleared = np.where((labels == 0) & (np.arange(80) < 20), 0.2, base_scores)
    base = {"none": base_scores, "lung-field crop (70%)": base_scores, "lung-field crop (60%)": base_scores}
    lever = {"none": base_scores, "lung-field crop (70%)": cleared, "lung-field crop (60%)": base_scores}
    points = {"balanced": 0.5, "screening": 0.3}
    rows = {r["shift"]: r for r in paired_comparison(labels, patients, base, lever, points, points, rounds=400)}
    assert list(rows) == ["none", "lung-field crop (70%)", "lung-field crop (60%)", FRAMING_MEAN]
    for metric in PAIRED_METRICS:
        assert rows["none"][metric] == {"difference": 0.0, "95ci": [0.0, 0.0]}
    assert rows["lung-field crop (70%)"]["screening_sensitivity"]["difference"] == 0.0
    crop = rows["lung-field crop (70%)"]["screening_specificity"]
    assert crop["difference"] == 0.5  # 20 of 40 normal images
    # Resampling patients moves the share cleared around its half, never to no gain at all.
    assert 0.2 < crop["95ci"][0] < 0.5 < crop["95ci"][1] < 0.8
    assert rows[FRAMING_MEAN]["screening_specificity"]["difference"] == 0.25
    # Both models rank every pneumonia above every normal child: the lever gained at the shipped
    # threshold only, and the best specificity the ranking allows at sensitivity 0.98 says so.
    assert rows["lung-field crop (70%)"]["specificity_at_screening_sensitivity"] == {"difference": 0.0, "95ci": [0.0, 0.0]}


def test_a_model_compared_with_itself_differs_by_nothing(tiny_models, tiny_data):
    model = Predictor.load("cnn_small", tiny_models)
    rows = measure_paired(model, [Predictor.load("cnn_small", tiny_models)], tiny_data, rounds=50)["cnn_small"]
    assert [r["shift"] for r in rows] == [*SHIFTS, FRAMING_MEAN]
    assert all(r[k] == {"difference": 0.0, "95ci": [0.0, 0.0]} for r in rows for k in PAIRED_METRICS)


def test_sharpening_sweep_starts_unchanged_and_adds_detail_with_strength():
    gray = xray_like(5, True, 96)
    assert np.array_equal(SWEEP["none"](gray), gray)
    detail = lambda image: np.abs(cv2.Laplacian(image.astype(np.float32), cv2.CV_32F)).mean()
    for width in WIDTHS:
        weaker, stronger = (detail(sharpen(width, strength)(gray)) for strength in STRENGTHS)
        assert detail(gray) < weaker < stronger, width


def test_recipe_settings_from_the_command_line_are_typed_and_checked():
    assert _recipe_settings(["mixup=0.2", "sampling=balanced", "epochs=3", "test_time_zooms=1,1.12,0.9"]) == {
        "mixup": 0.2, "sampling": "balanced", "epochs": 3, "test_time_zooms": (1.0, 1.12, 0.9)}
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        _recipe_settings(["no_such_field=1"])
    with pytest.raises(SystemExit, match="not a valid int"):
        _recipe_settings(["epochs=many"])
    # bool("false") is True: flags are read as words.
    assert _recipe_settings(["augment_before_contrast=false"]) == {"augment_before_contrast": False}
    assert _recipe_settings(["augment_before_contrast=True"]) == {"augment_before_contrast": True}
    with pytest.raises(SystemExit, match="not a valid bool"):
        _recipe_settings(["augment_before_contrast=maybe"])
    assert _recipe_settings(["sharpness_widths=0.005,0.02"]) == {"sharpness_widths": (0.005, 0.02)}


def test_gaussian_blur_spreads_a_point_by_its_width_and_keeps_flat_images_flat():
    point = np.zeros((1, 41, 41, 1), np.float32)
    point[0, 20, 20, 0] = 1.0
    spread = gaussian_blur(tf.constant(point), 2.0).numpy()[0, ..., 0]
    offsets = np.arange(41) - 20
    assert spread.sum() == pytest.approx(1.0, abs=1e-5)
    # A Gaussian of width 2 has variance 4 along each axis (truncated at 3 widths: 3.95).
    assert (spread.sum(axis=1) * offsets**2).sum() == pytest.approx(4.0, abs=0.1)
    assert (spread.sum(axis=0) * offsets**2).sum() == pytest.approx(4.0, abs=0.1)
    # The reflected border adds nothing: a flat image stays flat up to its edges.
    flat = np.full((1, 16, 16, 1), 0.6, np.float32)
    np.testing.assert_allclose(gaussian_blur(tf.constant(flat), 3.0).numpy(), flat, atol=1e-6)


def test_detail_blur_draws_one_of_its_widths_per_image():
    images = tf.constant(np.repeat(xray_like(3, False, 24)[None, ..., None], 64, axis=0).astype(np.float32) / 255)
    fine, coarse = (gaussian_blur(images[:1], width * 24).numpy()[0] for width in (0.02, 0.08))
    assert np.abs(fine - coarse).mean() > 0.005
    picked = [0 if np.allclose(b, fine, atol=1e-5) else 1 if np.allclose(b, coarse, atol=1e-5) else -1
              for b in detail_blur(images, (0.02, 0.08)).numpy()]
    assert -1 not in picked and 0 < sum(picked) < 64
    # No widths: the 3x3 box of the recipes before multi-scale sharpening.
    np.testing.assert_array_equal(detail_blur(images).numpy(), tf.nn.avg_pool2d(images, 3, 1, "SAME").numpy())
    with pytest.raises(ValueError, match="shares of the image side"):
        augmenter("acquisition", seed=0, sharpness_widths=(2.0,))


def test_max_gamma_widens_the_exposure_augmentation():
    # On a flat grey of 0.25 the level's own gamma range (up to e^0.35) lifts the centre to at most
    # 0.25^(1/1.42) = 0.38; brightness adds at most 0.1 and contrast, acting around the image mean
    # (lowered only by the black corners that rotation and shifts bring in), a few hundredths more.
    # Only a wider gamma range carries it past 0.6 (0.25^(1/3) = 0.63 at max_gamma 3).
    flat = tf.constant(np.full((512, 32, 32, 1), 0.25, np.float32))
    centres = {g: augmenter("strong", seed=0, max_gamma=g)(flat).numpy()[:, 16, 16, 0] for g in (0.0, 3.0)}
    assert centres[0.0].max() < 0.52
    assert centres[3.0].max() > 0.6 and centres[3.0].min() < centres[0.0].min()
    with pytest.raises(ValueError, match="above 1"):
        augmenter("strong", seed=0, max_gamma=0.6)


def test_reflected_light_adds_a_soft_spot_to_the_chosen_share_of_images():
    # A reflection adds light, never takes it: on a flat grey of 0.2 every change is a rise, smooth (no
    # steeper than the narrowest spot's flank, peak / (sigma e^0.5), with the ramp's slope: 0.092 a pixel
    # here), peaking within the drawn range; chance 0 changes nothing.
    flat = tf.constant(np.full((400, 48, 48, 1), 0.2, np.float32))
    np.testing.assert_array_equal(reflected_light(flat, 0.0).numpy(), flat.numpy())
    lit = reflected_light(flat, 0.5).numpy() - 0.2
    assert lit.min() >= -1e-6
    # The spot's sigma is a share of the 48-pixel side; the ramp rises over 47 steps.
    steepest = REFLECTION_PEAK[1] / (REFLECTION_WIDTH[0] * 48 * np.sqrt(np.e)) + REFLECTION_RAMP / 47
    assert np.abs(np.diff(lit, axis=1)).max() < steepest and np.abs(np.diff(lit, axis=2)).max() < steepest
    peaks = lit.max(axis=(1, 2, 3))
    touched = peaks > 1e-6
    assert 0.4 < touched.mean() < 0.6  # 200 of 400 expected
    assert peaks[touched].max() <= REFLECTION_PEAK[1] + REFLECTION_RAMP + 1e-6
    assert np.median(peaks[touched]) > REFLECTION_PEAK[0]
    # Clipped at white, as a camera clips it.
    assert reflected_light(tf.ones((4, 16, 16, 1)), 1.0).numpy().max() == 1.0
    with pytest.raises(ValueError, match="chance per image"):
        augmenter("strong", seed=0, reflections=1.5)
    with pytest.raises(ValueError, match="choose an augment level"):
        augmenter("none", seed=0, reflections=0.5)


def test_reflections_peak_as_high_as_asked_and_what_they_saturate_is_filled_as_screening_fills_it():
    # Up to 0.6 on a grey of 0.2 nothing saturates (0.2 + 0.6 + the ramp's 0.15 < 1): peaks above the
    # default range's 0.35 appear, none above 0.6 and the ramp.
    flat = tf.constant(np.full((300, 48, 48, 1), 0.2, np.float32))
    peaks = (reflected_light(flat, 1.0, peak=0.6).numpy() - 0.2).max(axis=(1, 2, 3))
    assert peaks.max() > REFLECTION_PEAK[1] + REFLECTION_RAMP and peaks.max() <= 0.6 + REFLECTION_RAMP + 1e-6
    # On a grey of 0.75 a strong spot saturates its centre. Filled, no white is left: the patch takes
    # the grey around it, at most the brightest unsaturated pixel (Telea's fill averages its rim).
    grey = np.full((64, 96, 96, 1), 0.75, np.float32)
    tf.random.set_seed(3)
    clipped = reflected_light(tf.constant(grey), 1.0, peak=0.6).numpy()
    tf.random.set_seed(3)
    filled = reflected_light(tf.constant(grey), 1.0, peak=0.6, fill=True).numpy()
    eight_bit = np.uint8(clipped * 255 + 0.5)
    saturated = (eight_bit >= photo.SATURATED).reshape(64, -1).any(axis=1)
    assert 10 < saturated.sum() < 64
    for image, lit, white in zip(filled, clipped, saturated):
        if not white:
            np.testing.assert_array_equal(image, lit)
            continue
        assert np.uint8(image * 255 + 0.5).max() < photo.SATURATED
        assert image.max() <= lit[np.uint8(lit * 255 + 0.5) < photo.SATURATED].max() + 1 / 255
        # Exactly the pixels screening's fill would change, changed to its values.
        gray = np.uint8(lit[..., 0] * 255 + 0.5)
        screened = photo.glare_filled(gray, gray >= photo.SATURATED)
        changed = screened != gray
        np.testing.assert_allclose(image[..., 0][changed], screened[changed] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(image[..., 0][~changed], lit[..., 0][~changed])
    # White the X-ray had before its light (a marker) is not a reflection: unlit, an image with a white
    # block keeps it; lit by a spot beside it that saturates, the spot is filled, the marker kept whole,
    # though the spot's halo reaches over it.
    marked = np.full((1, 96, 96, 1), 0.3, np.float32)
    marked[:, 4:12, 4:20] = 1.0
    np.testing.assert_array_equal(reflected_light(tf.constant(marked), 0.0, peak=0.6, fill=True).numpy(), marked)
    rows, columns = np.mgrid[0:96, 0:96]
    spot = 0.8 * np.exp(-((rows - 16) ** 2 + (columns - 12) ** 2) / (2 * 6.0 ** 2))
    lit = np.minimum(marked + spot[None, ..., None], 1.0).astype(np.float32)
    light_white = (np.uint8(lit * 255 + 0.5) >= photo.SATURATED) & (marked < 1.0)
    assert light_white.sum() > 20
    kept = filled_reflections(marked, lit)
    np.testing.assert_array_equal(kept[:, 4:12, 4:20], marked[:, 4:12, 4:20])
    assert np.uint8(kept[light_white] * 255 + 0.5).max() < photo.SATURATED
    with pytest.raises(ValueError, match="share of white"):
        augmenter("strong", seed=0, reflections=0.5, reflection_peak=1.5)
    with pytest.raises(ValueError, match="share of white"):
        augmenter("strong", seed=0, reflections=0.5, reflection_peak=0.05)
    with pytest.raises(ValueError, match="set reflections too"):
        augmenter("strong", seed=0, reflection_fill=True)
    with pytest.raises(ValueError, match="set augment_before_contrast too"):
        augmentation(Recipe(augment="strong", reflections=0.5, reflection_fill=True), seed=0)


def test_lit_validation_judges_every_epoch_on_the_same_lit_copies_beside_the_plain_x_rays(tiny_data):
    _, examples = data.patient_split(tiny_data, 42)
    spec = PreprocessSpec(TINY_SIZE, equalise=True)
    plain = data.load_set(examples, spec)
    peak = 0.7  # below white, so that the bound on what light adds can fail
    after = Recipe(augment="strong", reflections=0.5, reflection_peak=peak, lit_validation=True)
    before = replace(after, augment_before_contrast=True)
    n = len(plain.labels)
    inputs, labels = lit_validation_set(plain, before, spec, seed=42)
    assert inputs.shape == (2 * n, *plain.inputs.shape[1:])
    np.testing.assert_array_equal(inputs[:n], plain.inputs)
    np.testing.assert_array_equal(labels, np.concatenate([plain.labels, plain.labels]))
    # The same light for every epoch and run; another seed, another light.
    np.testing.assert_array_equal(lit_validation_set(plain, before, spec, seed=42)[0], inputs)
    assert not np.array_equal(lit_validation_set(plain, before, spec, seed=7)[0][n:], inputs[n:])
    # Light only adds, every image gets some, and the recipe's peak is drawn: spots beyond the default
    # peak's reach (its upper end and the ramp), though none beyond the peak asked for and the ramp.
    unfinished = data.load_set(examples, spec.before_contrast()).inputs
    lit = lit_copies(unfinished, after, seed=42)
    added = lit - unfinished
    assert (added >= 0).all() and (added.mean(axis=(1, 2, 3)) > 0).all()
    assert REFLECTION_PEAK[1] + REFLECTION_RAMP < added.max() <= peak + REFLECTION_RAMP + 1e-6
    # Augmenting before the contrast step, the copies are those X-rays under that same light, then the
    # model's contrast step: what the model reads of a lit film.
    np.testing.assert_array_equal(inputs[n:], with_contrast_step(None, spec)(tf.constant(lit)).numpy())
    # With the fill, what the light saturated is filled as screening fills it: none of it is left white.
    saturated = lambda images: np.uint8(np.clip(images, 0, 1) * 255 + 0.5) >= photo.SATURATED
    white_before = saturated(unfinished)
    assert (saturated(lit) & ~white_before).any()
    filled = lit_copies(unfinished, replace(after, reflection_fill=True), seed=42)
    assert not (saturated(filled) & ~white_before).any()
    with pytest.raises(ValueError, match="PreprocessSpec"):
        lit_copies(unfinished, before, seed=42)


def test_pooled_validation_auc_is_what_the_checkpoint_watches_and_leaves_keras_validation_plain():
    """A network whose score is the image's mean brightness: plain normals 0.1 and 0.2, plain pneumonias
    0.5 and 0.6, so plain AUC 1; lit, the normals 0.55 and 0.7 and the pneumonias 0.8 and 0.9. Pooled,
    13 of the 16 (pneumonia, normal) pairs are in order: AUC 13/16."""
    inputs = keras.Input((4, 4, 1))
    mean = keras.layers.Dense(1, kernel_initializer="ones", use_bias=False)(keras.layers.GlobalAveragePooling2D()(inputs))
    network = keras.Model(inputs, mean)
    network.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", metrics=[keras.metrics.AUC(name="auc")])
    images = lambda levels: np.stack([np.full((4, 4, 1), v, np.float32) for v in levels])
    plain, labels = images([0.1, 0.2, 0.5, 0.6]), np.array([0, 0, 1, 1], np.float32)
    pooled = np.concatenate([plain, images([0.55, 0.7, 0.8, 0.9])]), np.concatenate([labels, labels])
    history = network.fit(plain, labels, validation_data=(plain, labels), epochs=2, verbose=0,
                          callbacks=[PooledValidationAUC(*pooled, batch_size=3)])
    assert history.history["val_auc"] == pytest.approx([1.0, 1.0])
    assert history.history[LIT_AUC] == pytest.approx([13 / 16] * 2, abs=1e-3)


def test_augmentation_before_the_contrast_step_is_followed_by_it():
    # Eight well-separated grey levels: halving the contrast keeps them apart, so
    # equalisation after it gives back exactly the equalised original.
    levels = np.repeat(np.arange(8, dtype=np.uint8) * 32 + 8, 32).reshape(16, 16)
    spec = PreprocessSpec(16, equalise=True)
    before = (levels.astype(np.float32) / 255.0)[None, ..., None]
    lower_contrast = lambda images: 0.5 * images + 0.25
    finished = with_contrast_step(lower_contrast, spec)(tf.constant(before)).numpy()
    np.testing.assert_array_equal(finished[0], contrast_step(levels, spec))
    # Augmenting the finished input instead (the default order) keeps the change.
    after = lower_contrast(contrast_step(levels, spec))
    assert np.abs(after - finished[0]).mean() > 0.1
    # Without the model's spec there is no contrast step to apply: a loud error, not a silent skip.
    with pytest.raises(ValueError, match="PreprocessSpec"):
        augmentation(Recipe(augment="acquisition", augment_before_contrast=True), seed=0)


def test_levers_train_and_serving_reproduces_the_validation_evidence(tiny_data, tmp_path):
    """Mixup, balanced sampling, robust augmentation (sharpened at two scales, filled reflections) before
    equalisation and test-time zooms together: the Predictor must give exactly the probabilities that
    calibration was fitted on."""
    overrides = {"mixup": 0.2, "sampling": "balanced", "augment": "robust", "augment_before_contrast": True,
                 "sharpness_widths": (0.03, 0.06), "test_time_zooms": (1.0, 1.12, 0.9),
                 "reflections": 0.5, "reflection_peak": 0.6, "reflection_fill": True, "lit_validation": True}
    card = train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=1, size=TINY_SIZE, models_dir=tmp_path,
                             overrides=overrides, equalise=True), log=lambda *_: None)
    assert card.test_time_zooms == [1.0, 1.12, 0.9] and card.preprocess["equalise"]
    assert card.training["recipe"]["augment_before_contrast"] is True
    assert list(card.training["recipe"]["sharpness_widths"]) == [0.03, 0.06]
    assert "reflections up to 60% of white" in card.summary and "saturate filled" in card.summary
    assert "the epoch picked on validation X-rays lit and plain" in card.summary
    assert card.training["epoch_chosen_by"] == "validation AUC, plain and lit X-rays pooled"
    history = json.loads((tmp_path / "cnn_small.history.json").read_text())
    assert len(history[LIT_AUC]) == len(history["val_auc"]) == card.training["epochs_run"]
    assert card.training["recipe"]["sampling"] == "balanced" and card.training["class_weights"] is None
    saved = json.loads((tmp_path / "cnn_small.validation.json").read_text())["predictions"]
    # The Keras path that calibration was fitted on, exactly; the ONNX path within the parity bound.
    for runtime, tolerance in (("keras", 1e-6), ("onnx", 1e-4)):
        scored = reports.score_split(Predictor.load("cnn_small", tmp_path, runtime=runtime), tiny_data, "validation")
        np.testing.assert_array_equal(scored.labels, saved["labels"])
        np.testing.assert_allclose(scored.probabilities, saved["probabilities"], atol=tolerance, err_msg=runtime)


def test_js_divergence_of_bernoulli_outputs_is_zero_when_equal_symmetric_and_bounded():
    p = tf.constant([[0.2], [0.9], [0.5]])
    q = tf.constant([[0.2], [0.1], [0.6]])
    values = bernoulli_js_divergence(p, q).numpy()
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(values, bernoulli_js_divergence(q, p).numpy(), atol=1e-7)
    # By hand for 0.5 against 0.6 (middle 0.55).
    kl = lambda a, b: a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    assert values[2] == pytest.approx((kl(0.5, 0.55) + kl(0.6, 0.55)) / 2, rel=1e-4)
    worst = bernoulli_js_divergence(tf.constant([[1.0]]), tf.constant([[0.0]])).numpy()[0]
    assert worst == pytest.approx(np.log(2), rel=1e-3)


def test_framing_consistency_adds_the_divergence_between_two_views_only_in_training():
    inputs = keras.Input((4, 4, 1))
    network = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs)))
    wrapper = FramingConsistency(network, weight=3.0)
    wrapper.compile(loss=keras.losses.BinaryCrossentropy())
    view = tf.random.uniform((6, 4, 4, 1), seed=1)
    other = tf.random.uniform((6, 4, 4, 1), seed=2)
    labels = tf.constant([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    predicted = wrapper((view, other))
    np.testing.assert_allclose(predicted, network(view))  # the network's answer on the first view
    plain = float(wrapper.compute_loss(x=view, y=labels, y_pred=predicted))
    same = float(wrapper.compute_loss(x=(view, view), y=labels, y_pred=predicted))
    different = float(wrapper.compute_loss(x=(view, other), y=labels, y_pred=predicted))
    assert same == pytest.approx(plain, abs=1e-6)
    divergence = float(np.mean(bernoulli_js_divergence(predicted, network(other))))
    assert divergence > 0 and different == pytest.approx(plain + 3.0 * divergence, rel=1e-5)
    assert float(wrapper.compute_loss(x=(view, other), y=labels, y_pred=predicted, training=False)) == \
        pytest.approx(plain, abs=1e-6)


def test_training_with_framing_consistency_saves_the_plain_network(tiny_data, tmp_path):
    card = train(TrainConfig(arch="cnn_small", data_dir=tiny_data, epochs=1, size=TINY_SIZE, models_dir=tmp_path,
                             overrides={"augment": "scale", "framing_consistency": 2.0}), log=lambda *_: None)
    assert card.training["recipe"]["framing_consistency"] == 2.0
    model = keras.saving.load_model(tmp_path / "cnn_small.keras", safe_mode=True)
    assert not isinstance(model, FramingConsistency) and model.name == "cnn_small"
    with pytest.raises(ValueError, match="reframes"):
        training_dataset(np.zeros((4, 8, 8, 1), np.float32), np.array([0, 1, 0, 1]),
                         Recipe(framing_consistency=1.0), batch_size=2)


def test_an_ensemble_of_a_model_with_itself_measures_as_the_model(tiny_models, tiny_data):
    # The logit mean of identical members is the member's raw output, and its calibration and
    # thresholds are fitted on validation as training fitted the model's: the shift report must agree.
    single = Predictor.load("cnn_small", tiny_models)
    validation, report = measure_ensemble([single, Predictor.load("cnn_small", tiny_models)], tiny_data, "pair")
    alone = measure(single, tiny_data)
    assert report["members"] == ["cnn_small", "cnn_small"]
    assert validation["auc"] == pytest.approx(single.card.validation["auc"], abs=1e-6)
    for paired, own in zip(report["shifts"], alone["shifts"], strict=True):
        for key in ("auc", "screening_sensitivity", "screening_specificity", "balanced_accuracy"):
            assert paired[key] == pytest.approx(own[key], abs=1e-6), (paired["shift"], key)


def test_an_ensemble_measured_with_other_zooms_leaves_its_members_as_they_were(tiny_models, tiny_data):
    members = [Predictor.load("cnn_small", tiny_models) for _ in range(2)]
    own = list(members[0].card.test_time_zooms)
    _, zoomed = measure_ensemble(members, tiny_data, "pair", [1.0, 1.3])
    _, plain = measure_ensemble(members, tiny_data, "pair")
    assert [m.test_time_zooms for m in members] == [own, own]
    # the zooms were used all the same
    assert [r["auc"] for r in zoomed["shifts"]] != [r["auc"] for r in plain["shifts"]]


def test_a_paired_comparison_refuses_models_validated_on_different_patients(tiny_models, tiny_data):
    other = Predictor.load("cnn_small", tiny_models)
    training = other.card.training
    other.card = replace(other.card, training=training | {"split": training["split"] | {"seed": other.card.split_seed + 1}})
    with pytest.raises(ValueError, match="different patient splits"):
        measure_paired(Predictor.load("cnn_small", tiny_models), [other], tiny_data)


def test_an_ensemble_refuses_members_that_read_images_differently(tiny_models, tiny_data):
    first, second = Predictor.load("cnn_small", tiny_models), Predictor.load("cnn_small", tiny_models)
    second.spec = replace(second.spec, equalise=True)
    with pytest.raises(ValueError, match="read images alike"):
        measure_ensemble([first, second], tiny_data, "mismatched")
