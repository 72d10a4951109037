"""The model zoo: every architecture by name, with its input and training recipe.

All models take ``(size, size, 1)`` grayscale in [0, 1] (see ``core.serving.imaging``)
and end in one sigmoid unit: the probability of pneumonia.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import keras
from keras import layers, regularizers

from core.serving.imaging import PreprocessSpec


@keras.saving.register_keras_serializable(package="core")
class PerImageStandardization(layers.Layer):
    """Zero mean, unit variance per image.

    Exposure and contrast differ between X-ray machines and hospital periods;
    standardising inside the model makes it blind to such global changes.
    """

    def call(self, inputs):
        mean = keras.ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(inputs, axis=(1, 2, 3), keepdims=True)
        return (inputs - mean) / keras.ops.maximum(std, 1e-3)


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained by default; CLI flags override it."""

    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine", "exponential" (keras.io) or "constant"
    weight_decay: float = 0.0
    # "none", "light", "strong", "framing", "acquisition", "robust" or "scale" (see core.learning.train)
    augment: str = "none"
    # Augment the resized frame before the spec's contrast step (equalisation, CLAHE), where a real
    # machine's exposure, sharpness and noise arrive, rather than the finished input; see pipeline
    augment_before_contrast: bool = False
    min_crop_area: float = 0.4  # smallest random-resized crop of "scale" augmentation, as a share of the area
    # Gaussian widths, as shares of the image side, at which the sharpness augmentation blurs or
    # sharpens, one drawn per image (core.learning.pipeline.detail_blur); empty: a 3x3 box
    sharpness_widths: tuple[float, ...] = ()
    # Widest gamma of the exposure augmentation, drawn log-uniformly in [1/g, g]; 0: the augment
    # level's own (e^0.35, about 1.42, for the strong levels)
    max_gamma: float = 0.0
    # Chance per training image of a reflection's light added over part of it (core.learning.pipeline.
    # reflected_light): a phone photo of a film under a lamp or beside a window; 0: none
    reflections: float = 0.0
    # The strongest reflection's peak, a share of white (the peak is drawn from REFLECTION_PEAK's lower
    # end up to it); 0: REFLECTION_PEAK's own upper end
    reflection_peak: float = 0.0
    # Fill what a reflection's light saturates, and its halo, as the photo finder fills it (core.serving.
    # photo.glare_filled), rather than leave it clipped at white; the exposure and contrast augmentations
    # follow, as a camera's exposure follows the light on the film. Needs augment_before_contrast
    reflection_fill: bool = False
    # Pick the epoch (and stop early) on validation AUC over the plain validation X-rays and a copy of each
    # lit as training lights them, drawn once at a fixed seed, pooled: plain validation AUC alone cannot see
    # whether healthy lit X-rays score above sick unlit ones (core.learning.pipeline.lit_copies)
    lit_validation: bool = False
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 turns it off
    # Weight of the framing-consistency term (core.learning.pipeline.FramingConsistency); 0 turns it off
    framing_consistency: float = 0.0
    sampling: str = "class_weights"  # or "balanced": both classes drawn equally often
    test_time_zooms: tuple[float, ...] = (1.0,)  # framings averaged at inference (core.serving.tta)
    # Epochs of contrastive pre-training of the trunk before the classifier (core.learning.pretrain); 0: none
    pretrain_epochs: int = 0
    patience: int = 5
    # Early stopping watches only from this epoch on: under a cosine schedule an early run of poor
    # epochs at a high learning rate can otherwise stop training before the rate has come down
    patience_from_epoch: int = 0
    # Momentum of an exponential moving average of the weights (Polyak averaging), which is validated,
    # checkpointed and saved in their place; 0: none. Averaging along the path finds flatter minima,
    # which hold up better on data from elsewhere (SWAD, Cha et al. 2021)
    weight_average: float = 0.0


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    build: Callable[[PreprocessSpec, str], keras.Model]
    preprocess: PreprocessSpec
    recipe: Recipe = field(default_factory=Recipe)


def _gray_input(spec: PreprocessSpec) -> keras.KerasTensor:
    return keras.Input(shape=(spec.size, spec.size, 1), name="image")


def _to_rgb(x):
    # Networks designed for colour get the gray channel three times; done in the
    # model so that every architecture shares one preprocessing function.
    return layers.Concatenate(name="gray_to_rgb")([x, x, x])


def _probability(x):
    # float32 output even under mixed precision, so probabilities stay exact.
    return layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)


def build_mlp(spec: PreprocessSpec, weights: str = "none") -> keras.Model:
    """The notebooks' dense baseline: flattened pixels into small Dense layers."""
    inputs = _gray_input(spec)
    x = layers.Flatten()(inputs)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, _probability(x), name="mlp")


def _three_stage_cnn(spec: PreprocessSpec, name: str, dropout: float, l2: float) -> keras.Model:
    regulariser = regularizers.L2(l2) if l2 else None
    inputs = _gray_input(spec)
    x = inputs
    for filters in (32, 64, 64):
        x = layers.Conv2D(filters, 3, activation="relu", kernel_regularizer=regulariser)(x)
        x = layers.MaxPooling2D()(x)
        if dropout:
            x = layers.Dropout(dropout / 2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu", kernel_regularizer=regulariser)(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _probability(x), name=name)


def build_cnn_small(spec: PreprocessSpec, weights: str = "none") -> keras.Model:
    """Three Conv2D/MaxPool stages and a Dense head, no regularisation."""
    return _three_stage_cnn(spec, "cnn_small", dropout=0.0, l2=0.0)


def build_cnn_reg(spec: PreprocessSpec, weights: str = "none") -> keras.Model:
    """The same CNN with Dropout and L2: the notebook's chosen final model."""
    return _three_stage_cnn(spec, "cnn_reg", dropout=0.5, l2=1e-4)


def build_keras_io(spec: PreprocessSpec, weights: str = "none") -> keras.Model:
    """keras.io "Pneumonia Classification on TPU" (Amy MiHyun Jang), layer for layer.

    The example's Rescaling(1/255) is left out: our inputs are already in [0, 1].
    """

    def conv_block(filters, x):
        x = layers.SeparableConv2D(filters, 3, activation="relu", padding="same")(x)
        x = layers.SeparableConv2D(filters, 3, activation="relu", padding="same")(x)
        x = layers.BatchNormalization()(x)
        return layers.MaxPool2D()(x)

    def dense_block(units, dropout_rate, x):
        x = layers.Dense(units, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        return layers.Dropout(dropout_rate)(x)

    inputs = _gray_input(spec)
    x = _to_rgb(inputs)
    x = layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    x = layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    x = layers.MaxPool2D()(x)
    x = conv_block(32, x)
    x = conv_block(64, x)
    x = conv_block(128, x)
    x = layers.Dropout(0.2)(x)
    x = conv_block(256, x)
    x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    x = dense_block(512, 0.7, x)
    x = dense_block(128, 0.5, x)
    x = dense_block(64, 0.3, x)
    return keras.Model(inputs, _probability(x), name="keras_io")


def build_backbone(spec: PreprocessSpec, weights: str = "none") -> keras.Model:
    """MobileNetV3-Small from keras.applications, nested, with a new sigmoid head.

    ``weights="imagenet"`` fetches Keras' published ImageNet weights (needs the
    internet); a path to a weights file loads that file instead.
    """
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(spec.size, spec.size, 3), include_top=False,
        weights=None if weights == "none" else weights,
        include_preprocessing=False, pooling="avg")
    if weights == "none":
        # keras.applications sets batch-norm momentum to 0.999, tuned for ImageNet's
        # millions of steps; from scratch on a few thousand images the moving
        # statistics never catch up and inference outputs a constant.
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
    inputs = _gray_input(spec)
    # ImageNet weights expect [-1, 1] inputs.
    x = layers.Rescaling(2.0, offset=-1.0)(_to_rgb(inputs))
    x = backbone(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model(inputs, _probability(x), name="backbone")


def _residual_cnn(spec: PreprocessSpec, name: str, pooled_stages: int) -> keras.Model:
    """A compact residual CNN with per-image standardisation (cxrnet and its variants).

    Built for generalising to other machines rather than fitting this one:
    standardised inputs, batch norm, global average pooling (few parameters,
    no position-specific head) and dropout, trained with strong augmentation.
    The first ``pooled_stages`` of the four stages halve the resolution after
    them; the last stage's map is the one the heat maps are drawn from.
    """
    inputs = _gray_input(spec)
    x = PerImageStandardization(name="standardize")(inputs)
    # A strided stem and a pooling step, as in ResNet: lung opacities are coarse
    # structures, and a quarter-resolution trunk keeps CPU training short.
    x = layers.Conv2D(24, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    for stage, filters in enumerate((32, 64, 128, 192)):
        shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"stage{stage}_shortcut")(x)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{stage}_conv1")(x)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{stage}_conv2")(y)
        y = layers.BatchNormalization()(y)
        x = layers.ReLU(name=f"stage{stage}_out")(layers.Add()([shortcut, y]))
        if stage < pooled_stages or stage == 3:
            # The last stage is always max-pooled before the global average:
            # the class activation map stays exact at the map before it (core.learning.export).
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, _probability(x), name=name)


def build_cxrnet(spec: PreprocessSpec, weights: str = "none") -> keras.Model:
    """Our own residual CNN: evidence on a 5x5 map at 160 px."""
    return _residual_cnn(spec, "cxrnet", pooled_stages=3)


def build_cxrnet_fine(spec: PreprocessSpec, weights: str = "none") -> keras.Model:
    """cxrnet with its last stage at twice the resolution (10x10 at 160 px).

    A 5x5 map cannot say "the lower left lung" without smearing evidence over
    the ribs and the abdomen; the finer map costs about 1.5x the compute.
    """
    return _residual_cnn(spec, "cxrnet_fine", pooled_stages=2)


_CXRNET_TRAINING = ("CLAHE, per-image standardisation, scale and acquisition augmentation, balanced sampling, "
                    "test-time zooms")
_CXRNET_RECIPE = Recipe(epochs=30, learning_rate=2e-3, weight_decay=1e-4, augment="scale", label_smoothing=0.05,
                        sampling="balanced", test_time_zooms=(1.0, 1.12, 0.9), patience=6)

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("mlp", "Dense baseline on 64x64 pixels", build_mlp, PreprocessSpec(64),
                     Recipe(epochs=20, batch_size=64, learning_rate=1e-3, lr_schedule="constant")),
        Architecture("cnn_small", "Three Conv2D/MaxPool stages, no regularisation", build_cnn_small,
                     PreprocessSpec(96), Recipe(epochs=10, lr_schedule="constant")),
        Architecture("cnn_reg", "Three Conv2D/MaxPool stages with Dropout and L2, light augmentation",
                     build_cnn_reg, PreprocessSpec(96),
                     Recipe(epochs=12, lr_schedule="constant", augment="light")),
        Architecture("keras_io", "keras.io Pneumonia Classification on TPU network", build_keras_io,
                     PreprocessSpec(128),
                     Recipe(epochs=6, batch_size=32, learning_rate=0.015, lr_schedule="exponential",
                            patience=10)),
        Architecture("backbone", "keras.applications MobileNetV3-Small trained from scratch",
                     build_backbone, PreprocessSpec(128),
                     Recipe(epochs=12, learning_rate=2e-3, weight_decay=1e-4, augment="light")),
        # The recipe's levers were measured one at a time (benchmarks/levers.py, models/levers.json) against
        # a second initialisation as the noise floor, then at full size with the shift check; what each
        # kept or dropped lever did, with its figures and command: docs/model-history.md.
        Architecture("cxrnet", "Our residual CNN: " + _CXRNET_TRAINING, build_cxrnet,
                     PreprocessSpec(160, clahe=True), _CXRNET_RECIPE),
        Architecture("cxrnet_fine", "cxrnet with a 10x10 evidence map: " + _CXRNET_TRAINING, build_cxrnet_fine,
                     PreprocessSpec(160, clahe=True), _CXRNET_RECIPE),
    )
}


def get_architecture(name: str, size: int | None = None) -> Architecture:
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{name}'; choose from {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    if size:
        arch = replace(arch, preprocess=replace(arch.preprocess, size=size))
    return arch
