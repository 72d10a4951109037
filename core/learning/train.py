"""Training: fit one network or an ensemble, calibrate on validation, write the model, its card and reports."""
from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core.analysis import data, evaluation
from core.analysis.reports import in_batches
from core.learning import ensemble, keras_model
from core.learning.export import export
from core.learning.keras_model import KerasNetwork
from core.learning.pipeline import (
    LIT_AUC,
    FramingConsistency,
    LearningRateLog,
    PooledValidationAUC,
    check_reflections,
    check_starting_weights,
    compile_model,
    hardware,
    initial_network,
    lit_copies,
    load_split,
    make_dataset,
    pick_strategy,
    set_seeds,
    training_dataset,
    training_spec,
)
from core.learning.pretrain import pretrain
from core.learning.tuning import find_learning_rate
from core.learning.zoo import Recipe, get_architecture
from core.serving import framing, registry
from core.serving.card import ModelCard
from core.serving.predictor import Predictor

ENSEMBLE_SEED_STEP = 1000  # member k is initialised with init_seed + k * this


@dataclass
class TrainConfig:
    arch: str
    data_dir: Path
    name: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    size: int | None = None
    seed: int = 42  # the patient split's seed, and the training seed unless init_seed is given
    init_seed: int | None = None  # another initialisation and batch order on the same split
    weights: str = "none"
    max_train_images: int | None = None  # for quick experiments and tests
    models_dir: Path | None = None
    overrides: dict = field(default_factory=dict)  # recipe fields, e.g. from `core tune`'s best config
    lr_auto: bool = False  # run the learning-rate finder first and use its suggestion
    hyperparameters_from: str = "hand-set recipe in core/learning/zoo.py"
    ensemble: int = 1  # members trained from different initialisations, averaged in logit space
    # Crop every image to the framing localiser's standard frame of this side (core.serving.framing); None: don't
    frame_side: float | None = None
    equalise: bool = False  # histogram-equalise every image first (PreprocessSpec.equalise)
    # TensorFlow's op determinism: the same command on the same machine and versions writes the same weights
    deterministic: bool = False


@dataclass
class FittedMember:
    model: keras.Model
    history: keras.callbacks.History
    seconds: float  # pre-training included
    pretraining: dict | None = None  # its NT-Xent curve and minutes, when the recipe pre-trains


def fine_tuning_source(arch, weights: str) -> tuple[list[np.ndarray] | None, dict | None]:
    """A trained model's weights to fine-tune, from a .keras file beside its card, and what the new card
    keeps of it; (None, None) for any other `weights`. The file must be the one its card hashed, of this
    architecture and preprocessing: a cxrnet's weights have a cxrnet_fine's shapes, and a 160 px model's
    would load into a 224 px one, so shapes alone would not refuse them."""
    if not weights.endswith(".keras"):
        return None, None
    path = Path(weights)
    source = registry.load_card(path.stem, path.parent)
    if source.file != path.name:
        raise ValueError(f"the card beside {path.name} describes {source.file}: name the file its card describes")
    verified = registry.verified_path(source.file, source.sha256, path.parent)
    if source.architecture != arch.name:
        raise ValueError(f"{path.name} is a {source.architecture}, and this run trains a {arch.name}: fine-tune a "
                         "model of the same architecture")
    ours = arch.preprocess.to_dict()
    differing = sorted(k for k in {*source.preprocess, *ours} if source.preprocess.get(k) != ours.get(k))
    if differing:
        raise ValueError(f"{path.name} reads X-rays otherwise than this run ({', '.join(differing)}): fine-tune "
                         "with the preprocessing it was trained with (its card's preprocess)")
    weights = keras.saving.load_model(verified, compile=False, safe_mode=True).get_weights()
    try:  # on a throwaway network, so that a source the architecture has outgrown is refused now
        arch.build(arch.preprocess, "none").set_weights(weights)
    except ValueError as error:
        raise ValueError(f"{path.name} no longer fits {arch.name}: {error}") from None
    return weights, {"model": source.name, "sha256": source.sha256}


def _refuse_fine_tuning_with(config: TrainConfig, recipe: Recipe, name: str) -> None:
    """What a fine-tuned run cannot also do, refused before any image is read: members would all start
    from the same weights, the finder would sweep a fresh network's rates, pre-training would retrain the
    trunk the run was asked to start from, and a file of the source's name would overwrite it."""
    given = [option for option, set_ in (("--ensemble", config.ensemble > 1), ("--lr auto", config.lr_auto),
                                         ("--set pretrain_epochs", recipe.pretrain_epochs)) if set_]
    if given:
        raise ValueError(f"a fine-tuned run trains one network from {Path(config.weights).name} at a given "
                         f"learning rate: drop {', '.join(given)}")
    if ((config.models_dir or registry.models_dir()) / f"{name}.keras").resolve() == Path(config.weights).resolve():
        raise ValueError(f"the fine-tuned model would overwrite its source {Path(config.weights).name}: "
                         "give it another --name")


def fit_member(arch, recipe: Recipe, train_set, val_ds, batch: int, seed: int, strategy, weights: str,
               log=print, initial: list[np.ndarray] | None = None,
               pooled: tuple[np.ndarray, np.ndarray] | None = None) -> FittedMember:
    """One network trained with the recipe from one initialisation (or from `initial`, a trained model's
    weights), at its best validation AUC, or with `pooled` (lit_validation_set) at its best AUC there."""
    set_seeds(seed)
    started = time.perf_counter()
    network, pretraining = None, None
    if recipe.pretrain_epochs or initial is not None:
        with strategy.scope():
            network = initial_network(arch, weights, initial)
    if recipe.pretrain_epochs:
        losses = pretrain(network, train_set.inputs, recipe, seed, strategy, log, arch.preprocess).history["loss"]
        pretraining = {"method": "SimCLR (NT-Xent) on the training side's images, no labels",
                       "epochs": recipe.pretrain_epochs, "loss": [round(float(v), 4) for v in losses],
                       "minutes": round((time.perf_counter() - started) / 60, 1)}
    train_ds, steps = training_dataset(train_set.inputs, train_set.labels, recipe, batch, seed, arch.preprocess)
    with strategy.scope():
        model = compile_model(arch, recipe, steps, weights, network)
    with tempfile.TemporaryDirectory() as scratch:
        best = Path(scratch) / "best.weights.h5"
        # With weight averaging, the average is swapped in for validation and for the checkpoint after it.
        averaging = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if recipe.weight_average else []
        lit = [PooledValidationAUC(*pooled, batch)] if pooled is not None else []
        monitor = chosen_on(recipe)
        callbacks = [
            LearningRateLog(),
            *averaging,
            *lit,  # after the averaging, so that it scores the averaged weights, as the checkpoint saves them
            keras.callbacks.ModelCheckpoint(best, monitor=monitor, mode="max", save_best_only=True,
                                            save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=recipe.patience,
                                          start_from_epoch=recipe.patience_from_epoch),
        ]
        history = model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs,
                            callbacks=callbacks, verbose=1 if sys.stderr.isatty() else 2)
        seconds = time.perf_counter() - started
        model.load_weights(best)
    if isinstance(model, FramingConsistency):
        model = model.network  # the wrapper only adds a training loss
    log(f"member (init seed {seed}) trained in {seconds / 60:.1f} min, best {epoch_chosen_by(recipe)} "
        f"{max(history.history[monitor]):.4f}")
    return FittedMember(model, history, seconds, pretraining)


def chosen_on(recipe: Recipe) -> str:
    """The history's series whose best epoch is kept: val_auc, or with Recipe.lit_validation LIT_AUC."""
    return LIT_AUC if recipe.lit_validation else "val_auc"


def best_epoch(history, recipe: Recipe) -> int:
    """The kept epoch, counted from 1: the best of the series the checkpoint watched (which never keeps
    an epoch whose figure is NaN)."""
    return int(np.nanargmax(history.history[chosen_on(recipe)])) + 1


def epoch_chosen_by(recipe: Recipe) -> str:
    return "validation AUC, plain and lit X-rays pooled" if recipe.lit_validation else "validation AUC"


def lit_validation_set(val_set: data.LoadedSet, recipe: Recipe, spec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (inputs, labels) whose AUC picks the epoch under Recipe.lit_validation: the validation X-rays and
    each of them lit too (pipeline.lit_copies), pooled. Calibration and the operating points are still
    fitted on the plain X-rays, as screening reads a digital file."""
    source = val_set.inputs
    if recipe.augment_before_contrast:
        source = data.load_set(val_set.examples, training_spec(spec, recipe)).inputs
        if len(source) != len(val_set.inputs):
            raise ValueError(f"{len(val_set.inputs) - len(source)} validation images could not be read again "
                             "before their contrast step: check that the data folder is not being changed")
    return (np.concatenate([val_set.inputs, lit_copies(source, recipe, seed, spec)]),
            np.concatenate([val_set.labels, val_set.labels]))


def train(config: TrainConfig, log=print) -> dict:
    """Train one architecture on the patient-level split and write model, card and reports."""
    init_seed = config.seed if config.init_seed is None else config.init_seed
    if config.deterministic:
        # Without it, two runs of one command part after a few epochs: threads (tf.data's parallel
        # maps, kernels' reductions) finish in no fixed order. Process-wide and irreversible,
        # which suits a command-line run.
        tf.config.experimental.enable_op_determinism()
    set_seeds(init_seed)
    arch = get_architecture(config.arch, config.size)
    recipe = replace(arch.recipe, **{**config.overrides, **{k: v for k, v in {
        "epochs": config.epochs, "batch_size": config.batch_size, "learning_rate": config.learning_rate,
    }.items() if v is not None}})
    name = config.name or config.arch
    # Before any image is read: a wrong setting should cost the operator seconds, not the data's loading.
    check_reflections(recipe.augment, recipe.reflections, recipe.reflection_peak, recipe.reflection_fill,
                      recipe.augment_before_contrast, recipe.lit_validation)
    fine_tuning = config.weights.endswith(".keras")
    if fine_tuning:
        _refuse_fine_tuning_with(config, recipe, name)
    else:
        check_starting_weights(arch, config.weights)
    if config.frame_side:
        if not framing.LOCALISER_PATH.exists():  # so that one command trains a framed model from scratch
            from core.learning.framing import train_localiser

            log(f"{framing.LOCALISER_PATH.name} is missing: training it first")
            train_localiser(config.data_dir, seed=config.seed, log=log)
        arch = replace(arch, preprocess=replace(arch.preprocess, frame=framing.shipped_localiser_sha256(),
                                                frame_side=config.frame_side))
    if config.equalise:
        arch = replace(arch, preprocess=replace(arch.preprocess, equalise=True))
    initial, fine_tuned_from = fine_tuning_source(arch, config.weights)
    weights = "none" if fine_tuning else config.weights
    strategy, strategy_name = pick_strategy()
    log(f"strategy: {strategy_name} ({type(strategy).__name__}), replicas: {strategy.num_replicas_in_sync}")
    train_set, val_set = load_split(config.data_dir, arch.preprocess, config.seed, config.max_train_images, log,
                                    recipe)
    hyperparameters_from = config.hyperparameters_from
    if config.lr_auto:
        found = find_learning_rate(arch, recipe, train_set, strategy=strategy)
        recipe = replace(recipe, learning_rate=found["suggestion"])
        hyperparameters_from += f"; learning rate {found['suggestion']:.2e} from the finder ({found['method']})"
        log(f"learning-rate finder suggests {found['suggestion']:.2e} ({found['method']})")

    batch = recipe.batch_size * strategy.num_replicas_in_sync
    val_ds = make_dataset(val_set.inputs, val_set.labels, batch)
    pooled = lit_validation_set(val_set, recipe, arch.preprocess, config.seed) if recipe.lit_validation else None
    # An ensemble's members differ only in their initialisation and batch order.
    member_seeds = [init_seed + ENSEMBLE_SEED_STEP * k for k in range(config.ensemble)]
    fitted = [fit_member(arch, recipe, train_set, val_ds, batch, seed, strategy, weights, log, initial, pooled)
              for seed in member_seeds]
    model = fitted[0].model if len(fitted) == 1 else ensemble.combine([f.model for f in fitted], name)
    history = fitted[0].history
    seconds = sum(f.seconds for f in fitted)

    # Calibration and thresholds are fitted on what serving computes: the
    # output averaged over the recipe's test-time zooms, by the Predictor itself.
    scorer = Predictor(KerasNetwork(model), ModelCard(name, arch.name, arch.description, arch.preprocess.to_dict(),
                                                      {}, {}, {}, test_time_zooms=list(recipe.test_time_zooms)))
    raw = in_batches(scorer.raw_probabilities, val_set.inputs)
    calibration, points, validation = evaluation.validation_evidence(
        val_set.labels, raw, [e.patient for e in val_set.examples])
    epochs_run = len(history.history["loss"])
    card = ModelCard(
        name=name,
        architecture=arch.name if len(fitted) == 1 else f"ensemble of {len(fitted)} {arch.name}",
        description=arch.description,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        preprocess=arch.preprocess.to_dict(),
        parameters=int(model.count_params()),
        test_time_zooms=list(recipe.test_time_zooms),
        calibration=calibration,
        operating_points=points,
        training={
            "command": "python -m core " + " ".join(sys.argv[1:]),
            "recipe": asdict(recipe),
            "weights": weights,
            "fine_tuned_from": fine_tuned_from,
            "pretraining": [f.pretraining for f in fitted] if recipe.pretrain_epochs else None,
            "init_seed": init_seed,
            "ensemble": None if len(fitted) == 1 else {
                "members": len(fitted), "combination": "mean of the members' logits", "init_seeds": member_seeds,
                # the plain validation AUC at each member's kept epoch, which lit_validation may pick elsewhere
                "member_best_validation_auc": [f.history.history["val_auc"][best_epoch(f.history, recipe) - 1]
                                               for f in fitted],
                "member_epochs_run": [len(f.history.history["loss"]) for f in fitted],
                "member_minutes": [round(f.seconds / 60, 1) for f in fitted]},
            "hyperparameters_from": hyperparameters_from,
            "class_weights": ({data.CLASS_NAMES[k]: v for k, v in data.class_weights(train_set.labels).items()}
                              if recipe.sampling == "class_weights" else None),
            "data_dir": Path(config.data_dir).name,
            "split": {"by": "patient", "validation_fraction": data.VALIDATION_FRACTION, "seed": config.seed},
            "counts": {
                "train": {c: int((train_set.labels == i).sum()) for i, c in enumerate(data.CLASS_NAMES)},
                "validation": {c: int((val_set.labels == i).sum()) for i, c in enumerate(data.CLASS_NAMES)},
            },
            "epochs_run": epochs_run,
            "best_epoch": best_epoch(history, recipe),
            "epoch_chosen_by": epoch_chosen_by(recipe),
            "seconds": round(seconds, 1),
            "strategy": strategy_name,
            "deterministic": config.deterministic,
            "hardware": hardware(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        validation=evaluation.card_summary(validation),
    )
    card = export(model, keras_model.save(model, card, config.models_dir), config.models_dir)
    registry.save_report(name, "validation", {"model": name, "split": "validation (patient-level)", **validation},
                         config.models_dir)
    registry.save_report(name, "history", {k: [float(v) for v in vals] for k, vals in history.history.items()},
                         config.models_dir)
    registry.save_shared(registry.PROFILE, data.profile({"train": train_set, "validation": val_set}, config.seed),
                         config.models_dir)
    log(f"saved {card.file} ({card.file_bytes / 1e6:.1f} MB) in {seconds / 60:.1f} min: "
        f"validation AUC {validation['auc']:.4f}, accuracy {validation['accuracy']:.4f}, "
        f"sensitivity {validation['sensitivity']:.4f}, specificity {validation['specificity']:.4f}")
    return card
