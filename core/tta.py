"""Test-time augmentation: one probability from several framings of the same image.

Clinics frame the chest more tightly or loosely than the training hospital did,
and the shift check (benchmarks/shift.py) shows framing moves a model's output
more than exposure or noise. Averaging over a few zooms of the image makes the
answer depend less on any one framing. The zooms are part of a model's recipe
and card, and training fits calibration and thresholds on the averaged output,
so serving and validation see the same numbers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

EPSILON = 1e-6


def zoom(images: tf.Tensor, factor: float) -> tf.Tensor:
    """A batch seen at another framing: factor > 1 crops the centre (tighter),
    factor < 1 extends the borders by reflection (looser); same size out."""
    if factor == 1.0:
        return images
    size = images.shape[1]
    if factor > 1.0:
        margin = round(size * (1.0 - 1.0 / factor) / 2)
        framed = images[:, margin:size - margin, margin:size - margin, :]
    else:
        margin = round(size * (1.0 / factor - 1.0) / 2)
        framed = tf.pad(images, [[0, 0], [margin, margin], [margin, margin], [0, 0]], mode="REFLECT")
    return tf.image.resize(framed, (size, size), method="area")


def averaged(model: keras.Model, zooms: Sequence[float]) -> Callable[[tf.Tensor], tf.Tensor]:
    """The model's pneumonia probability averaged over zooms, in logit space
    (a geometric mean of odds: one confident view cannot outvote the rest)."""
    zooms = tuple(zooms) or (1.0,)

    def forward(images: tf.Tensor) -> tf.Tensor:
        if zooms == (1.0,):
            return tf.reshape(model(images, training=False), [-1])
        # All views in one batch: one call of the model uses the CPU's cores
        # better than one call per view.
        views = tf.concat([zoom(images, factor) for factor in zooms], axis=0)
        p = tf.clip_by_value(tf.reshape(model(views, training=False), [len(zooms), -1]), EPSILON, 1.0 - EPSILON)
        return tf.sigmoid(tf.reduce_mean(tf.math.log(p) - tf.math.log1p(-p), axis=0))

    return forward
