"""Self-supervised pre-training (SimCLR, Chen et al. 2020) of a network's trunk on unlabelled X-rays.

Two views of each training image, drawn with the recipe's own augmentation (random-resized
crops, zoom, exposure, sharpness, noise), are pulled together in an embedding and pushed away
from every other image of the batch. The withheld period's normal X-rays were read as pneumonia
because they are framed tightly: a trunk that must recognise an X-ray across framings learns
features that framing does not change, before any label is seen. The classifier is then
trained from this trunk with the usual recipe (Recipe.pretrain_epochs turns it on).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from core.learning.pipeline import AUTOTUNE, augmentation, learning_rate, set_seeds
from core.learning.zoo import Recipe
from core.serving.imaging import PreprocessSpec

PROJECTION_UNITS = (256, 128)  # SimCLR's projection head: hidden width, embedding width
TEMPERATURE = 0.2  # of the NT-Xent loss; SimCLR's ablation favours 0.1-0.5 at small batches
BATCH_SIZE = 128  # images per batch, so 254 negatives per view: more than a classifier batch
LEARNING_RATE = 2e-3


def nt_xent(first, second, temperature: float = TEMPERATURE):
    """SimCLR's normalised temperature-scaled cross-entropy between two batches of embeddings.

    Row i of `first` and row i of `second` are views of the same image (the positive pair);
    the other 2N - 2 rows of both batches are its negatives."""
    n = keras.ops.shape(first)[0]
    embeddings = keras.ops.concatenate([first, second], axis=0)
    embeddings = embeddings / keras.ops.maximum(keras.ops.norm(embeddings, axis=1, keepdims=True), 1e-12)
    similarity = keras.ops.matmul(embeddings, keras.ops.transpose(embeddings)) / temperature
    # An embedding is trivially most similar to itself: take the diagonal out of the softmax.
    similarity = similarity - 1e9 * keras.ops.eye(2 * n, dtype=similarity.dtype)
    positives = keras.ops.concatenate([keras.ops.arange(n, 2 * n), keras.ops.arange(0, n)], axis=0)
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(positives, similarity, from_logits=True))


def trunk(network: keras.Model) -> keras.Model:
    """The network up to its global pooling: the features the classifier's head reads."""
    pooled = [layer for layer in network.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if len(pooled) != 1:
        raise ValueError(f"{network.name}: contrastive pre-training needs exactly one global average pooling "
                         f"layer, found {len(pooled)}")
    return keras.Model(network.inputs, pooled[0].output, name=f"{network.name}_trunk")


class ContrastivePretraining(keras.Model):
    """Trunk and projection head trained with NT-Xent on (view, other view) batches; no labels."""

    def __init__(self, network: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.trunk = trunk(network)
        self.projection = keras.Sequential([keras.layers.Dense(PROJECTION_UNITS[0], activation="relu"),
                                            keras.layers.Dense(PROJECTION_UNITS[1])], name="projection")

    def call(self, inputs, training=False):
        first, second = inputs
        return (self.projection(self.trunk(first, training=training), training=training),
                self.projection(self.trunk(second, training=training), training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return nt_xent(*y_pred)


def view_pairs(images: np.ndarray, recipe: Recipe, batch_size: int, seed: int,
               spec: PreprocessSpec | None = None) -> tuple[tf.data.Dataset, int]:
    """Shuffled batches of two independent augmentations of each image, and the batches per epoch
    (`spec` as for pipeline.training_dataset)."""
    if recipe.augment == "none":
        raise ValueError("contrastive pre-training needs an augmentation (Recipe.augment is 'none')")
    transform = augmentation(recipe, seed, spec)
    steps = len(images) // batch_size  # whole batches only: a last batch of a few images has few negatives
    ds = (tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size, drop_remainder=True)
          .map(lambda x: ((transform(x), transform(x)),), num_parallel_calls=AUTOTUNE))
    return ds.prefetch(AUTOTUNE), steps


def pretrain(network: keras.Model, images: np.ndarray, recipe: Recipe, seed: int, strategy, log=print,
             spec: PreprocessSpec | None = None) -> keras.callbacks.History:
    """Train `network`'s trunk in place by contrastive learning for recipe.pretrain_epochs epochs."""
    set_seeds(seed)
    batch = min(BATCH_SIZE, len(images))
    pairs, steps = view_pairs(images, recipe, batch, seed, spec)
    with strategy.scope():
        model = ContrastivePretraining(network, name=f"{network.name}_simclr")
        schedule = learning_rate("cosine", LEARNING_RATE, steps, recipe.pretrain_epochs)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4))
    history = model.fit(pairs, epochs=recipe.pretrain_epochs, verbose=2)
    losses = history.history["loss"]
    log(f"contrastive pre-training: {recipe.pretrain_epochs} epochs, NT-Xent {losses[0]:.3f} -> {losses[-1]:.3f} "
        f"(chance {np.log(2 * batch - 1):.3f})")
    return history
