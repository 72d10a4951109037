"""The training pipeline: strategy, seeds, augmentation, tf.data input, schedules and compilation.

Shared by training (core.learning.train), the learning-rate finder and the search
(core.learning.tuning), so neither imports the other.
"""
from __future__ import annotations

import os
import platform
import random
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from core.analysis import data
from core.learning.zoo import Recipe
from core.serving.imaging import PreprocessSpec, contrast_step
from core.serving.photo import SATURATED, glare_filled

AUTOTUNE = tf.data.AUTOTUNE


def pick_strategy() -> tuple[tf.distribute.Strategy, str]:
    """TPU when a resolver connects, all GPUs with mixed precision, else the default (CPU)."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), "TPU"
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        pass  # no TPU here: the usual case
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        # Half-precision matmuls on tensor cores; outputs stay float32 (see zoo).
        keras.mixed_precision.set_global_policy("mixed_float16")
        return tf.distribute.MirroredStrategy(), f"{len(gpus)} GPU(s), mixed precision"
    return tf.distribute.get_strategy(), "CPU"


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


# --- Augmentation ------------------------------------------------------------
# Geometry: small rotations, shifts and zoom, as positioning varies. Intensity:
# gamma, contrast and brightness, because exposure is what differs most
# between hospital periods and machines (the withheld test set among them).
# "framing" widens the zoom range: machines and radiographers frame the chest
# more tightly or loosely, and a tighter crop was what most moved validation
# specificity in the shift check (benchmarks/shift.py). "acquisition" adds what
# else differs between detectors: sharpness (blur or unsharp masking) and noise.
# "scale" adds random-resized crops down to 40% of the area (zoom-in up to
# 1.6x): the withheld period's normal X-rays show the lungs filling the frame,
# and models trained on full frames read that framing as pneumonia.
_STRONG = {"rotate": 0.05, "shift": 0.08, "zoom": 0.15, "gamma": 0.35, "contrast": 0.3, "brightness": 0.1}
_WIDE_FRAMING = {"zoom": 0.3, "shift": 0.1}
_DETECTOR = {"sharpness": 1.0, "noise": 0.03}
_SCALE = {"crop": True}  # down to Recipe.min_crop_area
_AUGMENT = {
    "light": {"rotate": 0.03, "shift": 0.05, "zoom": 0.08, "gamma": 0.0, "contrast": 0.1, "brightness": 0.05},
    "strong": _STRONG,
    "framing": _STRONG | _WIDE_FRAMING,
    "acquisition": _STRONG | _DETECTOR,
    "robust": _STRONG | _WIDE_FRAMING | _DETECTOR,
    "scale": _STRONG | _DETECTOR | _SCALE,
}
# Aspect ratios of the random-resized crops, as in Inception's training (Szegedy et al. 2015).
_CROP_ASPECT = (3 / 4, 4 / 3)
# Reflected light on a photographed film (Recipe.reflections): light a lamp or a window casts on the
# film's front adds to what the film passes, whatever the film's density. It is a soft spot, peaking at
# REFLECTION_PEAK of white and REFLECTION_WIDTH of the side wide (a Gaussian's sigma), over a ramp of up
# to REFLECTION_RAMP across the image. The photo finder fills only the saturated part of a reflection
# (core.serving.photo), and a digital X-ray with a spot of 0.25 added over its lungs lost 0.27 of
# specificity (60 normal validation X-rays, the default model of 2026-12-01): the haze reads as an opacity.
REFLECTION_PEAK = (0.05, 0.35)
REFLECTION_WIDTH = (0.05, 0.25)
REFLECTION_RAMP = 0.15


def random_resized_crops(images, min_area: float):
    """Each image cropped to a random box of min_area..1 of its area, resized back."""
    n = tf.shape(images)[0]
    size = images.shape[1]
    area = tf.random.uniform([n], min_area, 1.0)
    aspect = tf.exp(tf.random.uniform([n], np.log(_CROP_ASPECT[0]), np.log(_CROP_ASPECT[1])))
    width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    height = tf.minimum(tf.sqrt(area / aspect), 1.0)
    left = tf.random.uniform([n]) * (1.0 - width)
    top = tf.random.uniform([n]) * (1.0 - height)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(n), (size, size))


def augmentation(recipe: Recipe, seed: int, spec: PreprocessSpec | None = None):
    """The recipe's augmentation, followed by the contrast step when the recipe augments before it."""
    check_reflections(recipe.augment, recipe.reflections, recipe.reflection_peak, recipe.reflection_fill,
                      recipe.augment_before_contrast)
    transform = augmenter(recipe.augment, seed, min_crop_area=recipe.min_crop_area,
                          sharpness_widths=recipe.sharpness_widths, max_gamma=recipe.max_gamma,
                          reflections=recipe.reflections, reflection_peak=recipe.reflection_peak,
                          reflection_fill=recipe.reflection_fill)
    return finished_as_read(transform, recipe, spec)


def finished_as_read(transform, recipe: Recipe, spec: PreprocessSpec | None):
    """`transform`, then the spec's contrast step when the recipe augments before it: the model's input."""
    if not recipe.augment_before_contrast:
        return transform
    if spec is None:
        raise ValueError("augment_before_contrast needs the model's PreprocessSpec for its contrast step")
    return with_contrast_step(transform, spec)


def gaussian_blur(images, sigma: float):
    """A separable Gaussian blur of width `sigma` pixels. The border is reflected: zero padding
    would darken the edges, which sharpening would then turn into bright rims."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    columns = tf.nn.conv2d(padded, taps.reshape(-1, 1, 1, 1), 1, "VALID")
    return tf.nn.conv2d(columns, taps.reshape(1, -1, 1, 1), 1, "VALID")


def detail_blur(images, widths: tuple[float, ...] = ()):
    """The blurred image that the sharpness augmentation subtracts: for each image, a Gaussian blur
    at one of `widths` (shares of the side), drawn at random, or a 3x3 box when there are none.

    Detectors enhance edges at more than one scale (unsharp masking, multi-frequency
    processing); a single 3x3 box covers only the finest, and the shift check sharpens
    at a scale two to three times larger (core.analysis.shift).
    """
    if not widths:
        return tf.nn.avg_pool2d(images, 3, 1, "SAME")
    blurs = tf.stack([gaussian_blur(images, width * images.shape[1]) for width in widths])
    picked = tf.random.uniform([tf.shape(images)[0]], 0, len(widths), dtype=tf.int32)
    return tf.einsum("nk,knhwc->nhwc", tf.one_hot(picked, len(widths)), blurs)


def reflected_light(images, chance: float, peak: float = 0.0, fill: bool = False):
    """A batch of [0, 1] images (N, H, W, 1), each with chance `chance` given a reflection's light: a
    soft spot somewhere on it, its peak drawn from REFLECTION_PEAK's lower end up to `peak` (0: its upper
    end), and a ramp across it, added, then clipped at white; with `fill`, what the light saturates is
    filled as the photo finder fills it (filled_reflections)."""
    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    shape = tf.stack([n, 1, 1, 1])
    rows = tf.reshape(tf.linspace(0.0, 1.0, height), [1, height, 1, 1])
    columns = tf.reshape(tf.linspace(0.0, 1.0, width), [1, 1, width, 1])
    centre_row, centre_column = tf.random.uniform(shape), tf.random.uniform(shape)
    spread = tf.random.uniform(shape, *REFLECTION_WIDTH)
    spot = tf.exp(-((rows - centre_row) ** 2 + (columns - centre_column) ** 2) / (2 * spread ** 2))
    angle = tf.random.uniform(shape, 0.0, 2 * np.pi)
    across = (rows - 0.5) * tf.sin(angle) + (columns - 0.5) * tf.cos(angle)  # -0.71..0.71 along the ramp
    ramp = tf.clip_by_value(across / np.sqrt(2.0) + 0.5, 0.0, 1.0)
    strongest = peak or REFLECTION_PEAK[1]
    light = tf.random.uniform(shape, REFLECTION_PEAK[0], strongest) * spot + tf.random.uniform(shape, 0.0, REFLECTION_RAMP) * ramp
    reflected = tf.cast(tf.random.uniform(shape) < chance, images.dtype)
    lit = tf.minimum(images + reflected * light, 1.0)
    if not fill:
        return lit
    filled = tf.numpy_function(filled_reflections, [images, lit], lit.dtype, stateful=False)
    return tf.ensure_shape(filled, lit.shape)


def filled_reflections(unlit: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """`lit`, [0, 1] images (N, H, W, 1), with what its light saturated at 8 bits, and its halo, filled as
    the photo finder fills a film's glare (core.serving.photo.glare_filled). White the X-ray had before
    its light (a marker, a label) is not a reflection: an image the light left unsaturated is unchanged.
    The finder's rim and fill radius are pixels of a film photographed at several hundred pixels a
    side, so at a training size they reach a few times further across the X-ray."""
    filled_images = lit.copy()
    for before, image in zip(unlit, filled_images):
        gray = np.uint8(np.clip(image[..., 0], 0, 1) * 255 + 0.5)
        white_before = np.uint8(np.clip(before[..., 0], 0, 1) * 255 + 0.5) >= SATURATED
        glared = (gray >= SATURATED) & ~white_before
        if glared.any():
            filled = glare_filled(gray, glared)
            # The halo reaches beyond the patch, over a marker beside it too: that stays as it was.
            changed = (filled != gray) & ~white_before
            image[..., 0][changed] = filled[changed] / 255.0
    return filled_images


def check_reflections(level: str, reflections: float, peak: float = 0.0, fill: bool = False,
                      before_contrast: bool | None = None, lit_validation: bool = False) -> None:
    """Refuses reflection settings that make no sense together (ValueError naming the setting), with the
    augment level; `before_contrast` is the recipe's augment_before_contrast, None where it is not known."""
    if not 0 <= reflections <= 1:
        raise ValueError(f"reflections is a chance per image, in [0, 1], not {reflections}")
    if peak and not REFLECTION_PEAK[0] < peak <= 1:
        raise ValueError(f"reflection_peak is a share of white in ({REFLECTION_PEAK[0]}, 1], not {peak}")
    if (peak or fill) and not reflections:
        raise ValueError("reflection_peak and reflection_fill shape reflections: set reflections too")
    if lit_validation and not reflections:
        raise ValueError("lit_validation lights validation X-rays as training lights them: set reflections too")
    if reflections and level == "none":
        raise ValueError("reflections are part of the augmentation: choose an augment level, not 'none'")
    if fill and before_contrast is False:
        # Screening fills a film's glare in its grey levels, before the model's contrast step.
        raise ValueError("reflection_fill fills the grey levels before the contrast step: set "
                         "augment_before_contrast too")


def lit_copies(images: np.ndarray, recipe: Recipe, seed: int, spec: PreprocessSpec | None = None,
               batch: int = 64) -> np.ndarray:
    """Each of `images`, loaded as training loads them (training_spec), given a reflection's light as the
    recipe draws it (reflected_light, every image lit) and finished as the model reads it: by the contrast
    step when the recipe augments before it. The draws follow `seed`, so every epoch is judged on the same
    light (Recipe.lit_validation)."""
    def light(batch_images):
        return reflected_light(batch_images, 1.0, recipe.reflection_peak, recipe.reflection_fill)

    transform = finished_as_read(light, recipe, spec)
    tf.random.set_seed(seed)
    return np.concatenate([transform(tf.constant(images[start:start + batch])).numpy()
                           for start in range(0, len(images), batch)])


def augmenter(level: str, seed: int, *, min_crop_area: float = 0.4, sharpness_widths: tuple[float, ...] = (),
              max_gamma: float = 0.0, reflections: float = 0.0, reflection_peak: float = 0.0,
              reflection_fill: bool = False):
    """A function from a batch of [0, 1] images to an augmented batch, or None.

    `max_gamma` > 1 replaces the level's exposure range: gamma drawn log-uniformly in [1/max_gamma, max_gamma].
    `reflections`: the chance of a reflection's light on each image (reflected_light), before the camera's
    exposure and contrast; `reflection_peak` and `reflection_fill` are reflected_light's `peak` and `fill`.
    """
    check_reflections(level, reflections, reflection_peak, reflection_fill)
    if level == "none":
        return None
    if any(width <= 0 or width >= 0.1 for width in sharpness_widths):
        raise ValueError(f"sharpness widths are shares of the image side in (0, 0.1), not {sharpness_widths}")
    if max_gamma and max_gamma <= 1:
        raise ValueError(f"max_gamma is the widest gamma, above 1 (or 0 for the level's own), not {max_gamma}")
    p = _AUGMENT[level] | ({"gamma": float(np.log(max_gamma))} if max_gamma else {})
    geometry = keras.Sequential([
        keras.layers.RandomRotation(p["rotate"], fill_mode="constant", seed=seed),
        keras.layers.RandomTranslation(p["shift"], p["shift"], fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom((-p["zoom"], p["zoom"]), fill_mode="constant", seed=seed + 2),
    ])

    def apply(images):
        if p.get("crop"):
            images = random_resized_crops(images, min_crop_area)
        images = geometry(images, training=True)
        if reflections:
            images = reflected_light(images, reflections, reflection_peak, reflection_fill)
        n = tf.shape(images)[0]
        shape = tf.stack([n, 1, 1, 1])
        if p.get("sharpness"):
            # x + a * (x - blur(x)): a < 0 blurs (down to blur(x) itself at -1), a > 0 sharpens.
            amount = tf.random.uniform(shape, -p["sharpness"], p["sharpness"])
            blurred = detail_blur(images, sharpness_widths)
            images = images + amount * (images - blurred)
        if p.get("noise"):
            sigma = tf.random.uniform(shape, 0.0, p["noise"])
            images = images + sigma * tf.random.normal(tf.shape(images))
        if p["gamma"]:
            gamma = tf.exp(tf.random.uniform(shape, -p["gamma"], p["gamma"]))
            images = tf.pow(tf.clip_by_value(images, 1e-6, 1.0), gamma)
        mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
        contrast = tf.random.uniform(shape, 1 - p["contrast"], 1 + p["contrast"])
        brightness = tf.random.uniform(shape, -p["brightness"], p["brightness"])
        return tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 1.0)

    return apply


def training_spec(spec: PreprocessSpec, recipe: Recipe) -> PreprocessSpec:
    """How the training side's images are loaded: stopped before the contrast step when the recipe
    augments there (see with_contrast_step), else as the model reads them."""
    return spec.before_contrast() if recipe.augment_before_contrast else spec


def with_contrast_step(transform, spec: PreprocessSpec):
    """`transform` (or no change, when None) followed by the spec's own contrast step.

    CLAHE amplifies noise in flat regions and rescales what an exposure change
    did; the shift check, like a real machine, changes the image before it. So
    an augmentation meant to mimic another machine belongs before it too. The
    step is the serving code's (core.serving.imaging.contrast_step), on 8-bit
    pixels as serving has them, so training and screening still share one path.
    """

    def finish(batch: np.ndarray) -> np.ndarray:
        pixels = np.round(np.clip(batch[..., 0], 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.stack([contrast_step(image, spec) for image in pixels])

    def apply(images):
        images = transform(images) if transform is not None else images
        finished = tf.numpy_function(finish, [images], tf.float32, stateful=False)
        return tf.ensure_shape(finished, images.shape)

    return apply


def mixer(alpha: float):
    """Mixup (Zhang et al. 2018): convex combinations of pairs in a batch, labels and weights alike.

    Soft targets between the classes keep the network from becoming
    over-confident, the failure that costs specificity on a new hospital's data.
    """

    def apply(images, labels, weights):
        n = tf.shape(images)[0]
        # Beta(alpha, alpha) from two gamma draws; max(lam, 1 - lam) keeps each
        # mixed image closer to its own label.
        a = tf.random.gamma([n], alpha)
        b = tf.random.gamma([n], alpha)
        lam = a / (a + b)
        lam = tf.maximum(lam, 1.0 - lam)
        partner = tf.random.shuffle(tf.range(n))
        mix = lambda t, w: w * t + (1.0 - w) * tf.gather(t, partner)
        return (mix(images, tf.reshape(lam, [-1, 1, 1, 1])), mix(labels, lam), mix(weights, lam))

    return apply


def bernoulli_js_divergence(first, second):
    """Jensen-Shannon divergence between two Bernoulli outputs, per example: bounded (at most
    log 2), so one confidently wrong view cannot blow up the loss as a squared logit gap would."""
    eps = 1e-7
    first, second = (keras.ops.clip(keras.ops.reshape(p, [-1]), eps, 1 - eps) for p in (first, second))
    middle = (first + second) / 2

    def kl(p, q):
        return p * keras.ops.log(p / q) + (1 - p) * keras.ops.log((1 - p) / (1 - q))

    return (kl(first, middle) + kl(second, middle)) / 2


class FramingConsistency(keras.Model):
    """Training wrapper: the network's usual loss on one augmented view of each image, plus the
    divergence between its outputs on two views framed differently (AugMix's consistency term,
    Hendrycks et al. 2020).

    The withheld period's tightly framed normal X-rays were scored as pneumonia: crops taught the
    network that a crop keeps its label, not that it keeps its score. This term asks for the score.
    Inputs are (view, other view) in training and a single batch otherwise; only the wrapped
    network is saved.
    """

    def __init__(self, network: keras.Model, weight: float, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.weight = weight

    def call(self, inputs, training=False):
        first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        return self.network(first, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if training and isinstance(x, (tuple, list)):
            other = self.network(x[1], training=True)
            loss = loss + self.weight * keras.ops.mean(bernoulli_js_divergence(y_pred, other))
        return loss


def make_dataset(inputs: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches in file order, for validation and prediction."""
    return tf.data.Dataset.from_tensor_slices((inputs, labels.astype(np.float32))).batch(batch_size).prefetch(AUTOTUNE)


def training_dataset(inputs: np.ndarray, labels: np.ndarray, recipe: Recipe, batch_size: int,
                     seed: int = 42, spec: PreprocessSpec | None = None) -> tuple[tf.data.Dataset, int]:
    """Shuffled, augmented (image, label, weight) batches and the number of batches per epoch.

    The 74/26 class mix is countered either by loss weights ("class_weights",
    as keras.io does) or by drawing both classes equally often ("balanced").
    With recipe.augment_before_contrast, `inputs` are loaded with training_spec
    and `spec` is the model's, whose contrast step follows the augmentation.
    """
    labels = labels.astype(np.int64)
    steps = int(np.ceil(len(labels) / batch_size))
    if recipe.sampling == "balanced":
        per_class = [
            tf.data.Dataset.from_tensor_slices((inputs[labels == c], np.full((labels == c).sum(), c, np.float32)))
            .shuffle(int((labels == c).sum()), seed=seed + c, reshuffle_each_iteration=True).repeat()
            for c in range(len(data.CLASS_NAMES))
        ]
        ds = tf.data.Dataset.sample_from_datasets(per_class, weights=[0.5, 0.5], seed=seed,
                                                   rerandomize_each_iteration=True)
        ds = ds.map(lambda x, y: (x, y, tf.constant(1.0)))
    elif recipe.sampling == "class_weights":
        table = data.class_weights(labels)
        weights = np.array([table[int(c)] for c in labels], np.float32)
        ds = tf.data.Dataset.from_tensor_slices((inputs, labels.astype(np.float32), weights))
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    else:
        raise ValueError(f"unknown sampling '{recipe.sampling}'")
    ds = ds.batch(batch_size)
    transform = augmentation(recipe, seed, spec)
    if recipe.framing_consistency:
        if recipe.augment == "none" or recipe.mixup:
            raise ValueError("framing_consistency needs an augmentation that reframes, and no mixup")
        # Two independent draws of the augmentation: two framings of each image.
        ds = ds.map(lambda x, y, w: ((transform(x), transform(x)), y, w), num_parallel_calls=AUTOTUNE)
    elif transform is not None:
        ds = ds.map(lambda x, y, w: (transform(x), y, w), num_parallel_calls=AUTOTUNE)
    if recipe.mixup:
        ds = ds.map(mixer(recipe.mixup), num_parallel_calls=AUTOTUNE)
    return ds.take(steps).prefetch(AUTOTUNE), steps


def learning_rate(schedule: str, base: float, steps_per_epoch: int, epochs: int):
    """The learning rate of a Recipe.lr_schedule name: a schedule, or the constant base."""
    if schedule == "exponential":  # as in the keras.io example
        return keras.optimizers.schedules.ExponentialDecay(base, decay_steps=100000, decay_rate=0.96,
                                                           staircase=True)
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, decay_steps=max(1, steps_per_epoch * epochs),
                                                      alpha=0.02)
    return base


class LearningRateLog(keras.callbacks.Callback):
    """Adds the learning rate in force to each epoch's logs (for the training curves)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            optimizer = self.model.optimizer
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))


LIT_AUC = "val_lit_auc"


class PooledValidationAUC(keras.callbacks.Callback):
    """Adds LIT_AUC to each epoch's logs: the AUC, as val_auc's keras.metrics.AUC computes it, over
    validation X-rays plain and lit pooled (Recipe.lit_validation), for the checkpoint and early stopping
    after it to watch. Keras's own val_* stay those of the plain X-rays."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, batch_size: int):
        super().__init__()
        self.inputs, self.labels, self.batch_size = inputs, labels.astype(np.float32), batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            scores = self.model.predict(self.inputs, batch_size=self.batch_size, verbose=0)
            auc = keras.metrics.AUC()
            auc.update_state(self.labels, scores)
            logs[LIT_AUC] = float(auc.result())


def hardware() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    devices = f"{len(gpus)} GPU" if gpus else "CPU only"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {devices}"


def load_split(data_dir, spec, seed: int, max_train_images: int | None = None, log=print,
               recipe: Recipe | None = None) -> tuple[data.LoadedSet, data.LoadedSet]:
    """The patient-level (train, validation) split of DIR/train, decoded and preprocessed; the
    training side as training_spec says for the recipe, validation as the model reads it."""
    train_examples, val_examples = data.patient_split(data_dir, seed, max_train_images)
    log(f"data: {len(train_examples)} training and {len(val_examples)} validation images "
        f"({len({e.patient for e in val_examples})} validation patients)")
    loading = time.perf_counter()
    with tqdm(total=len(train_examples) + len(val_examples), desc="reading images", file=sys.stderr,
              disable=None) as bar:
        train_set = data.load_set(train_examples, training_spec(spec, recipe or Recipe()), progress=bar)
        val_set = data.load_set(val_examples, spec, progress=bar)
    log(f"read in {time.perf_counter() - loading:.0f} s")
    return train_set, val_set


def initial_network(arch, weights: str = "none", initial: list[np.ndarray] | None = None) -> keras.Model:
    """The architecture's network before training: from scratch ("none"), or holding `initial`, a trained
    model's weights (fine-tuning, core.learning.train.fine_tuning_source); the backbone alone may start
    from keras.applications' weights ("imagenet" or its own weights file). A fine-tuned backbone keeps the
    batch-norm momentum of one trained from scratch (core.learning.zoo.build_backbone)."""
    check_starting_weights(arch, weights)
    network = arch.build(arch.preprocess, weights)
    if initial is not None:
        network.set_weights(initial)
    return network


def check_starting_weights(arch, weights: str) -> None:
    """Refuses keras.applications weights for any architecture but the backbone, before any image is read."""
    if weights != "none" and arch.name != "backbone":
        raise ValueError(f"{arch.name} starts from scratch ('none') or from a trained {arch.name}'s .keras file "
                         f"beside its card, not '{weights}'")


def compile_model(arch, recipe: Recipe, steps_per_epoch: int, weights: str = "none",
                  network: keras.Model | None = None) -> keras.Model:
    """The architecture built (or `network`, built already) and compiled with its recipe
    (call inside a strategy scope)."""
    model = network or initial_network(arch, weights)
    if recipe.framing_consistency:
        model = FramingConsistency(model, recipe.framing_consistency, name=f"{model.name}_training")
    if not 0.0 <= recipe.weight_average < 1.0:
        raise ValueError(f"weight_average must be a momentum in [0, 1), not {recipe.weight_average}")
    schedule = learning_rate(recipe.lr_schedule, recipe.learning_rate, steps_per_epoch, recipe.epochs)
    averaging = {"use_ema": True, "ema_momentum": recipe.weight_average} if recipe.weight_average else {}
    optimizer = (keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay, **averaging)
                 if recipe.weight_decay else keras.optimizers.Adam(schedule, **averaging))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy", keras.metrics.AUC(name="auc"),
                 keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
    )
    return model
