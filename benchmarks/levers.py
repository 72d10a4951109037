"""Lever ablation: each robustness lever alone on a quick proxy of the cxrnet recipe,
measured on the patient-level validation split and by the acquisition-shift check.

A validation AUC near 1 cannot tell levers apart; the shift check shows which
ones keep sensitivity and specificity steady on images from other machines.
The proxy (96 px, 10 epochs, 3-6 minutes each on 2 CPU cores) is cheap
enough to run every lever; the chosen levers then go into the full recipe.

Usage: python -m benchmarks.levers [--dir artifacts/levers] [--data DIR] [--lever LABEL ...] [--save] [--card NAME]
Models already in --dir are reused. --save writes models/levers.json (shown on
the comparison page); --card records the table in that model's card.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.shift import measure, measure_ensemble, print_report
from core.analysis import data, reports
from core.learning.train import TrainConfig, train
from core.serving import registry
from core.serving.predictor import Predictor

PROXY = {"arch": "cxrnet", "size": 96, "epochs": 10}


@dataclass(frozen=True)
class Lever:
    model: str  # its model's name in the ablation folder
    recipe: dict = field(default_factory=dict)  # overrides of the proxy recipe
    init_seed: int | None = None
    arch: str = PROXY["arch"]
    frame_side: float | None = None  # crop to the framing localiser's standard frame of this side (train --frame)
    epochs: int = PROXY["epochs"]
    equalise: bool = False  # histogram-equalise every image first (train --equalise)


# "base" is the recipe the withheld period was measured on (acquisition
# augmentation, balanced sampling, test-time zooms); "base, another init" is the
# same recipe from another initialisation: the difference between the two is
# the noise any lever has to beat. The first levers measured (test-time zooms,
# mixup, balanced sampling, the wider zoom range) are in the cxrnet card's
# history; these are the ones aimed at the withheld period's tight framing.
BASE = {"augment": "acquisition"}
# Scale augmentation with the framing-consistency term: the recipe of cxrnet_consistent (docs/model-history.md).
_CONSISTENT = {"augment": "scale", "framing_consistency": 4.0}
# Shares of the image side, so the proxy's 96 px sharpen at the same anatomical scales as 160 px.
_EARLY_SHARP = _CONSISTENT | {"augment_before_contrast": True, "sharpness_widths": (0.005, 0.01, 0.02)}
LEVERS: dict[str, Lever] = {
    "base": Lever("base", BASE),
    "base, another init": Lever("base_init7", BASE, init_seed=7),
    "scale (random-resized crops)": Lever("scale", {"augment": "scale"}),
    "scale, another init": Lever("scale_init7", {"augment": "scale"}, init_seed=7),
    "scale to 25% of the area": Lever("scale25", {"augment": "scale", "min_crop_area": 0.25}),
    # Session 4: the last stage at twice the resolution, on top of scale (the default's recipe).
    "scale + finer evidence map": Lever("fine", {"augment": "scale"}, arch="cxrnet_fine"),
    "scale + finer evidence map, another init": Lever("fine_init7", {"augment": "scale"}, init_seed=7,
                                                      arch="cxrnet_fine"),
    # ... and a consistency term between two framings of each image (core.learning.pipeline.FramingConsistency).
    "scale + finer map + framing consistency": Lever("fine_consistency", _CONSISTENT,
                                                     arch="cxrnet_fine"),
    "scale + finer map + framing consistency, another init": Lever(
        "fine_consistency_init7", _CONSISTENT, init_seed=7, arch="cxrnet_fine"),
    # Session 5: a third initialisation, for ensembles of three.
    "scale + finer map + framing consistency, a third init": Lever(
        "fine_consistency_init1007", _CONSISTENT, init_seed=1007,
        arch="cxrnet_fine"),
    # Session 6: framing normalisation, every image cut to the localiser's standard frame
    # (core.serving.framing), on the default's recipe.
    "default recipe + standard frame (75%)": Lever(
        "frame75_consistency", _CONSISTENT, arch="cxrnet_fine", frame_side=0.75),
    "default recipe + standard frame (75%), another init": Lever(
        "frame75_consistency_init7", _CONSISTENT, init_seed=7, arch="cxrnet_fine", frame_side=0.75),
    "default recipe + standard frame (85%)": Lever(
        "frame85_consistency", _CONSISTENT, arch="cxrnet_fine", frame_side=0.85),
    "default recipe + standard frame (85%), another init": Lever(
        "frame85_consistency_init7", _CONSISTENT, init_seed=7, arch="cxrnet_fine", frame_side=0.85),
    # Session 7: the trunk pre-trained by SimCLR on the training side's images first (core.learning.pretrain).
    "standard frame (75%) + contrastive pre-training": Lever(
        "frame75_simclr", _CONSISTENT | {"pretrain_epochs": 40}, arch="cxrnet_fine", frame_side=0.75),
    # ... and its control for compute: the framed recipe trained three times as long, without pre-training.
    "standard frame (75%), 30 epochs": Lever("frame75_consistency_30epochs", _CONSISTENT, arch="cxrnet_fine",
                                             frame_side=0.75, epochs=30),
    "standard frame (75%) + contrastive pre-training, another init": Lever(
        "frame75_simclr_init7", _CONSISTENT | {"pretrain_epochs": 40}, init_seed=7, arch="cxrnet_fine",
        frame_side=0.75),
    # Session 8: the control from another initialisation, for the 30-epoch noise floor ...
    "standard frame (75%), 30 epochs, another init": Lever(
        "frame75_consistency_30epochs_init7", _CONSISTENT, init_seed=7, arch="cxrnet_fine", frame_side=0.75,
        epochs=30),
    # ... and grey levels equalised before the model (PreprocessSpec.equalise), on the 30-epoch control.
    "standard frame (75%) + histogram equalisation, 30 epochs": Lever(
        "frame75_equalise_30epochs", _CONSISTENT, arch="cxrnet_fine", frame_side=0.75, epochs=30, equalise=True),
    "standard frame (75%) + histogram equalisation, 30 epochs, another init": Lever(
        "frame75_equalise_30epochs_init7", _CONSISTENT, init_seed=7, arch="cxrnet_fine", frame_side=0.75,
        epochs=30, equalise=True),
    # Session 9: the augmentation applied before CLAHE (Recipe.augment_before_contrast), where the
    # shift check's and a real machine's exposure, sharpness and noise arrive, on the 30-epoch control.
    "standard frame (75%) + augmented before CLAHE, 30 epochs": Lever(
        "frame75_before_contrast_30epochs", _CONSISTENT | {"augment_before_contrast": True}, arch="cxrnet_fine",
        frame_side=0.75, epochs=30),
    "standard frame (75%) + augmented before CLAHE, 30 epochs, another init": Lever(
        "frame75_before_contrast_30epochs_init7", _CONSISTENT | {"augment_before_contrast": True}, init_seed=7,
        arch="cxrnet_fine", frame_side=0.75, epochs=30),
    # Session 10: on top of that, sharpness augmented at three Gaussian widths (Recipe.sharpness_widths)
    # instead of a 3x3 box: the shift check sharpens at a scale two to three times larger.
    "standard frame (75%) + augmented before CLAHE + sharpened at three scales, 30 epochs": Lever(
        "frame75_sharp_30epochs", _EARLY_SHARP, arch="cxrnet_fine", frame_side=0.75, epochs=30),
    "standard frame (75%) + augmented before CLAHE + sharpened at three scales, 30 epochs, another init": Lever(
        "frame75_sharp_30epochs_init7", _EARLY_SHARP, init_seed=7, arch="cxrnet_fine", frame_side=0.75, epochs=30),
}


@dataclass(frozen=True)
class Ensemble:
    members: tuple[str, ...]  # labels of LEVERS
    test_time_zooms: tuple[float, ...] | None = None  # None: the members' own


# Logit-averaged models above: what an ensemble buys over one member, and whether
# members can replace test-time zooms (the same number of forward passes).
CONSISTENCY = "scale + finer map + framing consistency"
ENSEMBLES: dict[str, Ensemble] = {
    "ensemble of base and another init": Ensemble(("base", "base, another init")),
    "ensemble of scale and another init": Ensemble(("scale (random-resized crops)", "scale, another init")),
    "ensemble of consistency and another init": Ensemble((CONSISTENCY, f"{CONSISTENCY}, another init")),
    "ensemble of three consistency inits": Ensemble(
        (CONSISTENCY, f"{CONSISTENCY}, another init", f"{CONSISTENCY}, a third init")),
    "ensemble of three consistency inits, one view": Ensemble(
        (CONSISTENCY, f"{CONSISTENCY}, another init", f"{CONSISTENCY}, a third init"), test_time_zooms=(1.0,)),
    # Diverse members: recipes that differ, not only initialisations.
    "ensemble of consistency and scale (5x5 map)": Ensemble((CONSISTENCY, "scale (random-resized crops)")),
    "ensemble of consistency and finer map without it": Ensemble((CONSISTENCY, "scale + finer evidence map")),
    # Session 8: does an ensemble add to framing normalisation? (At full size: cxrnet_framed's card.)
    "ensemble of two framed inits (75%, 30 epochs)": Ensemble(
        ("standard frame (75%), 30 epochs", "standard frame (75%), 30 epochs, another init")),
}


def ensure_model(lever: Lever, directory: Path, data_dir) -> str:
    """Train the lever's proxy model unless it is in the directory; returns its name."""
    if not (directory / f"{lever.model}.keras").exists():
        train(TrainConfig(arch=lever.arch, data_dir=data_dir, name=lever.model, epochs=lever.epochs,
                          size=PROXY["size"], models_dir=directory, overrides=lever.recipe,
                          init_seed=lever.init_seed, frame_side=lever.frame_side, equalise=lever.equalise,
                          hyperparameters_from=f"lever ablation: {lever.model}"))
    return lever.model


def _row(label: str, recipe: dict, validation: dict, shift: dict, **extra) -> dict:
    print_report(shift)
    return {"lever": label, "recipe": recipe, "auc": validation["auc"],
            "auc_95ci": validation.get("bootstrap_95ci", {}).get("auc"),
            "accuracy": validation["accuracy"], "ece": validation["ece"], **extra, **shift["summary"]}


def row(label: str, directory: Path, data_dir) -> dict:
    lever = LEVERS[label]
    name = ensure_model(lever, directory, data_dir)
    card = registry.load_card(name, directory)
    predictor = Predictor.load(name, directory)
    focus = reports.lung_focus(predictor, reports.score_split(predictor, data_dir, "validation"))
    recipe = {"arch": lever.arch, **lever.recipe}  # what differs from the proxy, as the table shows it
    if lever.frame_side:
        recipe["frame_side"] = lever.frame_side
    if lever.epochs != PROXY["epochs"]:
        recipe["epochs"] = lever.epochs
    if lever.equalise:
        recipe["equalise"] = True
    return _row(label, recipe, card.validation, measure(predictor, data_dir),
                init_seed=card.training.get("init_seed"), minutes=card.training["seconds"] / 60,
                lung_focus=focus["classes"]["PNEUMONIA"]["inside"])


def ensemble_row(label: str, directory: Path, data_dir) -> dict:
    """Members' raw outputs averaged in logit space, calibrated and thresholded on validation as training does."""
    chosen = ENSEMBLES[label]
    members = [Predictor.load(ensure_model(LEVERS[m], directory, data_dir), directory) for m in chosen.members]
    validation, shift = measure_ensemble(members, data_dir, label, chosen.test_time_zooms)
    recipe = {"members": list(chosen.members), "test_time_zooms": members[0].test_time_zooms}
    return _row(label, recipe, validation, shift, minutes=sum(m.card.training["seconds"] for m in members) / 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("artifacts/levers"))
    parser.add_argument("--data", default=None)
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--card", metavar="NAME", help="also record the table in this shipped model's card")
    parser.add_argument("--lever", action="append", choices=[*LEVERS, *ENSEMBLES],
                        help="measure only this lever (repeatable); --save then replaces its row in the table")
    args = parser.parse_args()
    data_dir = args.data or data.default_data_dir()
    args.dir.mkdir(parents=True, exist_ok=True)
    chosen = args.lever or [*LEVERS, *ENSEMBLES]
    rows = [row(label, args.dir, data_dir) for label in LEVERS if label in chosen]
    rows += [ensemble_row(label, args.dir, data_dir) for label in ENSEMBLES if label in chosen]
    print(f"\n{'lever':<34} {'AUC':>6} {'acc':>6} {'ECE':>6} {'shift AUC':>9} {'framing AUC':>11} "
          f"{'framing acc':>11} {'framing spec':>12}")
    for r in rows:
        print(f"{r['lever']:<34} {r['auc']:6.4f} {r['accuracy']:6.4f} {r['ece']:6.4f} {r['mean_auc']:9.4f} "
              f"{r['framing_mean_auc']:11.4f} {r['framing_mean_balanced_accuracy']:11.4f} "
              f"{r['framing_screening_specificity']:12.4f}")
    if args.lever:  # the other rows stay as they were measured
        kept = [r for r in (registry.load_shared("levers.json") or {}).get("rows", []) if r["lever"] not in chosen]
        order = [*LEVERS, *ENSEMBLES]
        rows = sorted(kept + rows, key=lambda r: order.index(r["lever"]) if r["lever"] in order else len(order))
    table = {"proxy": PROXY, "split": "validation (patient-level)", "rows": rows}
    if args.save:
        registry.save_shared("levers.json", table)
    if args.card:
        registry.update_card(args.card, "levers", table)


if __name__ == "__main__":
    main()
