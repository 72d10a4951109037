"""Contrastive pre-training: the NT-Xent loss, the trunk it trains, and training a classifier after it."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.learning.pretrain import ContrastivePretraining, nt_xent, pretrain, trunk
from core.learning.train import TrainConfig, train
from core.learning.zoo import Recipe, get_architecture

SIZE = 64  # cxrnet halves its input five times


def _nt_xent_by_hand(first: np.ndarray, second: np.ndarray, temperature: float) -> float:
    z = np.concatenate([first, second])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(first)
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        logits = np.array([z[i] @ z[j] / temperature for j in others])
        losses.append(-(z[i] @ z[positive] / temperature) + np.log(np.exp(logits).sum()))
    return float(np.mean(losses))


def test_nt_xent_matches_the_definition_computed_by_hand():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    got = float(nt_xent(tf.constant(first, tf.float32), tf.constant(second, tf.float32), temperature=0.5))
    assert got == pytest.approx(_nt_xent_by_hand(first, second, 0.5), rel=1e-5)


def test_nt_xent_is_low_when_views_agree_and_high_when_pairs_are_swapped():
    images = tf.constant(np.eye(4, dtype=np.float32))  # four orthogonal embeddings
    agreeing = float(nt_xent(images, images, temperature=0.2))
    swapped = float(nt_xent(images, tf.roll(images, 1, axis=0), temperature=0.2))
    chance = np.log(2 * 4 - 1)
    assert agreeing < 0.1 < chance < swapped


def test_trunk_is_the_network_up_to_its_global_pooling_and_shares_its_weights():
    arch = get_architecture("cxrnet", SIZE)
    network = arch.build(arch.preprocess, "none")
    features = trunk(network)
    assert features.output.shape[-1] == 192  # cxrnet's last stage
    assert all(any(w is v for v in network.weights) for w in features.weights)
    small = get_architecture("cnn_small", SIZE)
    with pytest.raises(ValueError, match="global average pooling"):
        trunk(small.build(small.preprocess, "none"))


def test_pretraining_trains_the_networks_trunk_in_place_and_lowers_the_loss():
    # Sixty-four images of distinct random blobs: telling them apart across augmentations is learnable.
    rng = np.random.default_rng(1)
    images = np.clip(tf.image.resize(rng.uniform(size=(64, 4, 4, 1)), (SIZE, SIZE)).numpy(), 0, 1)
    arch = get_architecture("cxrnet", SIZE)
    keras.utils.set_random_seed(3)
    network = arch.build(arch.preprocess, "none")
    head_before = network.get_layer("probability").get_weights()[0].copy()
    stem_before = network.layers[2].get_weights()[0].copy()
    history = pretrain(network, images.astype(np.float32), Recipe(augment="light", pretrain_epochs=12), seed=3,
                       strategy=tf.distribute.get_strategy(), log=lambda *_: None)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]
    assert not np.allclose(network.layers[2].get_weights()[0], stem_before)  # the trunk learnt
    np.testing.assert_array_equal(network.get_layer("probability").get_weights()[0], head_before)  # not the head


def test_pretraining_needs_an_augmentation():
    arch = get_architecture("cxrnet", SIZE)
    with pytest.raises(ValueError, match="augmentation"):
        pretrain(arch.build(arch.preprocess, "none"), np.zeros((8, SIZE, SIZE, 1), np.float32),
                 Recipe(pretrain_epochs=1), seed=0, strategy=tf.distribute.get_strategy(), log=lambda *_: None)


def test_training_after_pretraining_records_it_and_saves_the_plain_classifier(tiny_data, tmp_path):
    card = train(TrainConfig(arch="cxrnet", data_dir=tiny_data, epochs=1, size=SIZE, models_dir=tmp_path,
                             overrides={"augment": "scale", "pretrain_epochs": 2}), log=lambda *_: None)
    (pretraining,) = card.training["pretraining"]
    assert pretraining["epochs"] == 2 and len(pretraining["loss"]) == 2
    model = keras.saving.load_model(tmp_path / "cxrnet.keras", safe_mode=True)
    assert not isinstance(model, ContrastivePretraining) and model.name == "cxrnet"
    assert model.output.shape[-1] == 1
