"""Learning-rate finder (range test) and hyper-parameter search with keras-tuner."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core.analysis import data
from core.learning.pipeline import compile_model, make_dataset, training_dataset
from core.learning.zoo import Architecture, Recipe, get_architecture

LR_MIN, LR_MAX = 1e-6, 1.0
LR_STEPS = 150
SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected (as fastai's lr_find)
SKIP_START = 10  # the first steps' smoothed loss is mostly noise of the bias correction (fastai skips them too)
DIVERGENCE = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


class _RangeTest(keras.callbacks.Callback):
    """Grows the learning rate exponentially each batch and records the smoothed loss."""

    def __init__(self, rates: np.ndarray):
        super().__init__()
        self.rates, self.losses, self.smoothed = rates, [], []
        self._average = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(float(self.rates[len(self.losses)]))

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING ** (len(self.losses) + 1))
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        best = min(self.smoothed)
        if len(self.losses) >= len(self.rates) or not np.isfinite(smoothed) or smoothed > DIVERGENCE * best:
            self.model.stop_training = True


def suggest(rates: np.ndarray, smoothed: np.ndarray) -> tuple[float, str]:
    """The rate of steepest descent of the smoothed loss (per log-rate), before its minimum.

    Falls back to one tenth of the rate at the minimum when the curve is too short to
    have a slope."""
    skip = SKIP_START if len(rates) > 3 * SKIP_START else 0
    rates, smoothed = np.asarray(rates)[skip:], np.asarray(smoothed)[skip:]
    minimum = int(np.argmin(smoothed))
    if minimum >= 3:
        slopes = np.gradient(smoothed[:minimum + 1], np.log(rates[:minimum + 1]))
        return float(rates[int(np.argmin(slopes))]), "steepest descent of the smoothed loss"
    return float(rates[minimum] / 10), "one tenth of the rate at the loss minimum"


def find_learning_rate(arch: Architecture, recipe: Recipe, train_set: data.LoadedSet, steps: int = LR_STEPS,
                       min_lr: float = LR_MIN, max_lr: float = LR_MAX, strategy=None, seed: int = 42) -> dict:
    """Run the range test on training data and return the curve with a suggested rate."""

    rates = np.geomspace(min_lr, max_lr, steps)
    dataset = training_dataset(train_set.inputs, train_set.labels, recipe, recipe.batch_size, seed,
                               arch.preprocess)[0].repeat()
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = compile_model(arch, replace(recipe, lr_schedule="constant", learning_rate=min_lr), steps)
    probe = _RangeTest(rates)
    model.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[probe], verbose=0)
    tried = rates[:len(probe.losses)]
    suggestion, method = suggest(tried, probe.smoothed)
    diverged = bool(len(probe.losses) < steps)
    return {"architecture": arch.name, "rates": tried.tolist(), "losses": probe.losses, "smoothed": probe.smoothed,
            "suggestion": suggestion, "method": method,
            "diverged_at": float(tried[-1]) if diverged else None}


# --- Hyper-parameter search ------------------------------------------------------
# The search space, for every architecture: the recipe and the input size.
SEARCH_SPACE = {
    "learning_rate": "log-uniform 1e-4 .. 1e-2",
    "size": "one of 64, 96, 128, 160 px",
    "augment": "none, light or strong",
    "label_smoothing": "0, 0.05 or 0.1",
    "weight_decay": "0 or 1e-4",
}


def _choose(hp) -> tuple[int, dict]:
    size = hp.Choice("size", [64, 96, 128, 160])
    overrides = {"learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
                 "augment": hp.Choice("augment", ["none", "light", "strong"]),
                 "label_smoothing": hp.Choice("label_smoothing", [0.0, 0.05, 0.1]),
                 "weight_decay": hp.Choice("weight_decay", [0.0, 1e-4])}
    return size, overrides


def tune(arch_name: str, data_dir, trials: int, directory: Path, max_minutes: float | None = None,
         epochs: int = 3, seed: int = 42, max_train_images: int | None = None, log=print) -> list[dict]:
    """Bayesian optimisation of validation AUC on the patient-level split.

    Trials and the oracle live in `directory`: a second run there resumes the search
    (finished trials are kept) instead of starting over. The time budget is checked
    between trials."""
    import keras_tuner


    train_examples, val_examples = data.patient_split(data_dir, seed, max_train_images)
    loaded: dict[int, tuple[data.LoadedSet, data.LoadedSet]] = {}

    def sets_for(size: int):
        if size not in loaded:  # each input size is decoded once per search
            spec = get_architecture(arch_name, size).preprocess
            loaded[size] = (data.load_set(train_examples, spec), data.load_set(val_examples, spec))
        return loaded[size]

    def trial(hp):
        """A trial's architecture (at its input size) and recipe."""
        size, overrides = _choose(hp)
        arch = get_architecture(arch_name, size)
        return arch, replace(arch.recipe, epochs=epochs, **overrides)

    class HyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            arch, recipe = trial(hp)
            return compile_model(arch, recipe, int(np.ceil(len(train_examples) / recipe.batch_size)))

        def fit(self, hp, model, **kwargs):
            arch, recipe = trial(hp)
            train_set, val_set = sets_for(arch.preprocess.size)
            return model.fit(training_dataset(train_set.inputs, train_set.labels, recipe, recipe.batch_size, seed)[0],
                             validation_data=make_dataset(val_set.inputs, val_set.labels, recipe.batch_size),
                             epochs=epochs, **{"verbose": 0, **kwargs})

    directory = Path(directory)
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
    while True:
        # max_trials is not part of the stored state: raising it by one per round runs
        # exactly one new trial, so the budget can be checked between trials.
        tuner = keras_tuner.BayesianOptimization(
            HyperModel(), objective=keras_tuner.Objective("val_auc", "max"), max_trials=trials, seed=seed,
            directory=str(directory), project_name=arch_name, overwrite=False)
        failed = [t for t in tuner.oracle.trials.values() if t.status == "FAILED"]
        if failed:
            raise RuntimeError(f"trial {failed[0].trial_id} failed: {failed[0].message}")
        done = len([t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"])
        if done >= trials or (deadline and time.monotonic() > deadline):
            break
        tuner.oracle.max_trials = done + 1
        log(f"trial {done + 1} of {trials}")
        tuner.search(verbose=0)
    rows = [{"trial": t.trial_id, "val_auc": t.score, **t.hyperparameters.values}
            for t in tuner.oracle.get_best_trials(num_trials=trials)]
    (directory / f"{arch_name}_results.json").write_text(json.dumps(rows, indent=1))
    if rows:
        best = {k: v for k, v in rows[0].items() if k not in ("trial", "val_auc")}
        config = {"arch": arch_name, "size": best.pop("size"), "recipe": best,
                  "hyperparameters_from": f"keras-tuner Bayesian search, {len(rows)} trials, "
                                          f"best validation AUC {rows[0]['val_auc']:.4f}"}
        (directory / f"{arch_name}_best.json").write_text(json.dumps(config, indent=1))
    return rows


def load_config(path: Path) -> dict:
    """A training configuration as `core tune` writes it: arch, size, recipe fields."""
    config = json.loads(Path(path).read_text())
    unknown = set(config.get("recipe", {})) - set(asdict(Recipe()))
    if unknown:
        raise ValueError(f"{path}: unknown recipe fields {sorted(unknown)}")
    return config
