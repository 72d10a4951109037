"""Training the framing localiser of core.serving.framing, self-supervised on the training X-rays.

No X-ray is labelled with a box. Instead each training X-ray is cut to a random
box (a known one) and the network learns to say where the uncut X-ray's frame
lies relative to the cut: its centre and size in the cut's own coordinates.
To do that it must judge how large the thorax is and where it sits, which is
what a standard frame needs. Cuts range from half of each side (the lungs
fill the view) to a quarter more than the whole X-ray (a looser frame).
"""
from __future__ import annotations

import datetime as dt
import time
import warnings
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from core.analysis import data
from core.learning.pipeline import hardware, set_seeds
from core.learning.zoo import PerImageStandardization
from core.serving import framing, registry

SIDES = (0.5, 1.25)  # the random cuts' side, as a fraction of the X-ray's (log-uniform)
ASPECT = (0.85, 1.18)  # and their height-to-width ratio
# Cuts larger than the X-ray reach into a border of this share of its side on every edge,
# filled with black (as many X-rays' edges are) or with the X-ray mirrored (more body).
BORDER = 0.15
EPOCHS = 60
BATCH_SIZE = 64
TRAIN_SIZE = 224  # cuts are taken from the X-rays at the data set's own size


def build_localiser() -> keras.Model:
    """A small CNN from the coarse view to (centre row, centre column, log height, log width).

    It ends in a flattened map, not global pooling: where things are is the answer.
    """
    size = framing.LOCALISER_SIZE
    inputs = keras.Input((size, size, 1), name="image")
    x = PerImageStandardization(name="standardize")(inputs)
    for filters in (16, 32, 64, 96):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(4, dtype="float32", name="frame")(x), name="framing_localiser")


def random_cuts(images: tf.Tensor, seed_generator: tf.random.Generator) -> tuple[tf.Tensor, tf.Tensor]:
    """Random cuts of a batch of (N, H, W, 1) X-rays at the localiser's size, with each cut's target."""
    n = tf.shape(images)[0]
    uniform = lambda low, high: seed_generator.uniform([n], low, high)
    side = tf.exp(uniform(np.log(SIDES[0]), np.log(SIDES[1])))
    aspect = tf.sqrt(tf.exp(uniform(np.log(ASPECT[0]), np.log(ASPECT[1]))))
    height, width = side * aspect, side / aspect
    # A cut smaller than the X-ray lies inside it; a larger one contains it.
    top = tf.minimum(0.0, 1.0 - height) + seed_generator.uniform([n]) * tf.abs(1.0 - height)
    left = tf.minimum(0.0, 1.0 - width) + seed_generator.uniform([n]) * tf.abs(1.0 - width)
    pixels = images.shape[1]
    border = round(BORDER * pixels)
    paddings = [[0, 0], [border, border], [border, border], [0, 0]]
    mirrored = seed_generator.uniform([n, 1, 1, 1]) < 0.5
    padded = tf.where(mirrored, tf.pad(images, paddings, "REFLECT"), tf.pad(images, paddings))
    scale = pixels / (pixels + 2 * border)
    boxes = tf.stack([top, left, top + height, left + width], axis=1) * scale + border / (pixels + 2 * border)
    size = framing.LOCALISER_SIZE
    # crop_and_resize samples bilinearly, where serving shrinks by pixel area: a
    # little blur first keeps the textures alike at the localiser's coarse size.
    cuts = tf.image.crop_and_resize(tf.nn.avg_pool2d(padded, 2, 1, "SAME"), boxes, tf.range(n), (size, size))
    cuts = _vary_acquisition(cuts, seed_generator)
    # The uncut frame in the cut's coordinates: its centre and the log of its size.
    targets = tf.stack([(0.5 - top) / height, (0.5 - left) / width, -tf.math.log(height), -tf.math.log(width)],
                       axis=1)
    return cuts, targets


def _vary_acquisition(cuts: tf.Tensor, seed_generator: tf.random.Generator) -> tf.Tensor:
    """Exposure and sharpness varied independently of the cut.

    A zoomed-in cut is blurrier than a whole X-ray shrunk to the same size: left
    alone, the localiser reads blur (a soft detector, a low-resolution scan) as a
    tight frame. Half of each batch is therefore seen at a random lower resolution.
    """
    n = tf.shape(cuts)[0]
    size = framing.LOCALISER_SIZE
    low = tf.cast(seed_generator.uniform([], size // 4, size), tf.int32)
    softened = tf.image.resize(tf.image.resize(cuts, tf.stack([low, low]), antialias=True), (size, size))
    cuts = tf.where(seed_generator.uniform([n, 1, 1, 1]) < 0.5, softened, cuts)
    gamma = tf.exp(seed_generator.uniform([n, 1, 1, 1], -0.4, 0.4))
    return tf.pow(tf.clip_by_value(cuts, 1e-6, 1.0), gamma)


def _images(examples: list[data.Example]) -> np.ndarray:
    _, grays = data.decode_grays(examples)
    return np.stack([cv2.resize(g, (TRAIN_SIZE, TRAIN_SIZE), interpolation=cv2.INTER_AREA) for g in grays])[..., None]


def _batches(images: np.ndarray, seed: int, shuffle: bool) -> tf.data.Dataset:
    generator = tf.random.Generator.from_seed(seed)
    ds = tf.data.Dataset.from_tensor_slices(images)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(BATCH_SIZE).map(lambda x: random_cuts(tf.cast(x, tf.float32) / 255.0, generator))
    return ds.prefetch(tf.data.AUTOTUNE)


def errors(model: keras.Model, images: np.ndarray, seed: int) -> dict:
    """Mean absolute errors on random cuts of held-out X-rays: centre (fraction of the cut) and scale (log)."""
    cuts, targets = zip(*_batches(images, seed, shuffle=False))
    cuts, targets = np.concatenate(cuts), np.concatenate(targets)
    predicted = model.predict(cuts, verbose=0)
    absolute = np.abs(predicted - targets)
    return {"cuts": len(targets), "centre_mae": float(absolute[:, :2].mean()),
            "log_size_mae": float(absolute[:, 2:].mean()),
            "size_within_10_percent": float((absolute[:, 2:] < np.log(1.1)).all(axis=1).mean())}


def train_localiser(data_dir: Path, seed: int = 42, epochs: int | None = None, max_train_images: int | None = None,
                    path: Path | None = None, log=print) -> dict:
    """Train on the patient-level training side, measure on validation, write the ONNX file (by default
    the shipped localiser's path) and its card beside it."""
    epochs, path = epochs or EPOCHS, path or framing.LOCALISER_PATH
    set_seeds(seed)
    train_examples, val_examples = data.patient_split(data_dir, seed, max_train_images)
    train_images, val_images = _images(train_examples), _images(val_examples)
    log(f"localiser: {len(train_images)} training and {len(val_images)} validation X-rays")
    model = build_localiser()
    steps = int(np.ceil(len(train_images) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps * epochs, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=keras.losses.Huber(delta=0.2))
    started = time.perf_counter()
    history = model.fit(_batches(train_images, seed, shuffle=True), epochs=epochs,
                        validation_data=_batches(val_images, seed + 1, shuffle=False), verbose=2)
    seconds = time.perf_counter() - started
    measured = errors(model, val_images, seed + 2)
    log(f"localiser trained in {seconds / 60:.1f} min: centre error {measured['centre_mae']:.3f}, "
        f"log-size error {measured['log_size_mae']:.3f}")
    model(np.zeros((1, framing.LOCALISER_SIZE, framing.LOCALISER_SIZE, 1), np.float32))
    with warnings.catch_warnings():  # tf2onnx's NumPy deprecation notices, not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False)
    card = {
        "name": "framing_localiser",
        "purpose": "where the training hospital's frame lies in an X-ray; classifiers trained with "
                   "`train --frame` crop every image to a standard frame of it (core/serving/framing.py)",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "file": path.name, "file_bytes": path.stat().st_size, "sha256": registry.sha256_of(path),
        "input_size": framing.LOCALISER_SIZE, "parameters": int(model.count_params()),
        "standard_frame": {"centre": list(framing.LUNG_FIELD_CENTRE), "side": framing.STANDARD_SIDE},
        "training": {"command": f"python -m core train-localiser --epochs {epochs}",
                     "cut_sides": list(SIDES), "cut_aspect": list(ASPECT), "epochs": epochs,
                     "split": {"by": "patient", "seed": seed}, "train_images": len(train_images),
                     "seconds": round(seconds, 1), "hardware": hardware(), "final_loss": history.history["loss"][-1]},
        "validation": measured,
    }
    registry.save_shared(path.with_suffix(".json").name, card, path.parent)
    return card
