"""The photo proxy: does screening hold on phone photos of films and viewer screenshots?

Usage: python -m benchmarks.photos [--count 400] [--renderer proxy|randomised] [--model NAME] [--data DIR]
       [--processes 2] [--save]

Each validation X-ray (patients never trained on) is rendered as every picture of the renderer and
screened as a user's upload is, bytes in, by the model in use. The digital file of the same X-ray is
the baseline, screened in the same run. Renderers:
- proxy (core.analysis.photos): the renderer the film finder's thresholds were fitted on;
- randomised (benchmarks.randomised_photos): written apart from it, every parameter drawn at random
  over wide ranges; figures on it are reported, never tuned on.
For each rendering it prints: the share screened (not refused), the share found as the
right kind with the film's corners within 2% of the picture's side, the share reported as the
right kind (input_kind), the median |dp| against the digital file, the share of labels flipped at
the screening threshold, AUC on the same X-rays, sensitivity and specificity at the screening
threshold (and the digital files' specificity on the same X-rays), and the share carrying a photo
warning; and what looking for a film would cost a digital file.
Targets (issue 31, proxy): screened >= 95%, median |dp| <= 0.05, AUC >= digital AUC - 0.01,
for every rendering but the strong glare, which should be refused with its hint. Targets (issue 38,
randomised): screened >= 95%, median |dp| <= 0.05, <= 5% labels flipped, specificity within 0.03 of
the digital files' on the same X-rays; the kind right for >= 98% of all pictures.
--save writes the figures into the model's card (section "photo_proxy" or "photo_randomised").
"""
from __future__ import annotations

import argparse
import io
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import randomised_photos
from core.analysis import data, evaluation, photos
from core.analysis.reports import split_examples
from core.serving import photo, registry
from core.serving.imaging import ImageError, decode_image
from core.serving.predictor import Predictor
from core.serving.quality import LIGHT_AS_CAUSE, RETAKE
from core.serving.settings import DEFAULT_OPERATING_POINT

CORNER_TOLERANCE = 0.02  # of the picture's shorter side
REFUSED_RENDERINGS = ("strong glare (should be refused)",)
TIMED = 100  # digital files whose finding cost is timed
# Issue 38's targets on the randomised renderer: labels flipped, specificity lost, kinds right.
MAX_FLIPS = 0.05
MAX_SPECIFICITY_LOSS = 0.03
MIN_KIND_RIGHT = 0.98
# name -> (its renderings by name, render(gray, name, seed) giving .data, .corners and .kind)
RENDERERS = {"proxy": (photos.RENDERINGS, photos.render),
             "randomised": (randomised_photos.KINDS, randomised_photos.render)}

_predictor: Predictor | None = None


def _load(model: str | None) -> None:
    global _predictor
    _predictor = Predictor.load(model, threads=1)


def _screen(payload: bytes) -> tuple[float | None, str, list[str], str | None]:
    """(probability or None, refusal message, warnings, input kind) for one upload."""
    try:
        result = _predictor.screen(payload, DEFAULT_OPERATING_POINT)
    except ImageError as exc:
        return None, str(exc), [], exc.input_kind
    return result.probability, "", result.warnings, result.input_kind


def _corners_found(payload: bytes, corners: np.ndarray, kind: str) -> bool:
    """Found as the right kind, each corner within CORNER_TOLERANCE of where it was drawn."""
    try:
        straightened = decode_image(payload).straightened
    except ImageError:
        return False
    if straightened is None or straightened.kind != kind:
        return False
    size = Image.open(io.BytesIO(payload)).size  # a large JPEG decodes at a fraction of its size
    scale = max(straightened.picture.shape[:2]) / max(size)
    return bool(np.abs(straightened.location.corners / scale - corners).max() <= CORNER_TOLERANCE * min(size))


def _one(job: tuple[int, str, str]) -> dict:
    """One X-ray: its digital file and every rendering of it, screened."""
    index, path, renderer = job
    renderings, render = RENDERERS[renderer]
    raw = Path(path).read_bytes()
    gray = decode_image(raw).pixels
    rows = {"digital": {"p": _screen(raw)[0]}}
    for name in renderings:
        picture = render(gray, name, seed=index)
        probability, refusal, warnings, kind = _screen(picture.data)
        rows[name] = {"p": probability, "refusal": refusal, "warnings": warnings, "kind": kind, "drawn_kind": picture.kind,
                      "found": _corners_found(picture.data, picture.corners, picture.kind)}
    return rows


def summarise(results: list[dict], labels: np.ndarray, threshold: float, names) -> dict:
    """Each rendering's figures (see the module's docstring) against the digital files of the same X-rays."""
    digital = np.array([r["digital"]["p"] for r in results], dtype=float)
    usable = ~np.isnan(digital)
    figures = {"digital": {"auc": evaluation.auc(labels[usable], digital[usable]),
                           **_at_threshold(labels[usable], digital[usable], threshold)}}
    for name in names:
        p = np.array([np.nan if r[name]["p"] is None else r[name]["p"] for r in results], dtype=float)
        screened = ~np.isnan(p) & usable
        both = labels[screened]
        refusals: dict[str, int] = {}
        for r in results:
            if r[name]["refusal"]:
                refusal = r[name]["refusal"]
                # The refusal's own reason, not the light named after it as a possible cause.
                own = refusal.split(LIGHT_AS_CAUSE)[0].rsplit("; ", 1)[0] if LIGHT_AS_CAUSE in refusal else refusal
                reason = next((hint for hint in RETAKE if RETAKE[hint] in own), own[:60])
                refusals[reason] = refusals.get(reason, 0) + 1
        figures[name] = {
            "screened": float(screened.sum() / usable.sum()),
            "found": float(np.mean([r[name]["found"] for r in results])),
            "kind_right": float(np.mean([r[name]["kind"] == r[name]["drawn_kind"] for r in results])),
            "median_abs_dp": float(np.median(np.abs(p[screened] - digital[screened]))) if screened.any() else None,
            "auc": evaluation.auc(both, p[screened]) if len(set(both)) == 2 else None,
            "digital_auc_same_images": evaluation.auc(both, digital[screened]) if len(set(both)) == 2 else None,
            **(_at_threshold(both, p[screened], threshold) if screened.any() else {}),
            "label_flips": float(np.mean((p[screened] >= threshold) != (digital[screened] >= threshold)))
            if screened.any() else None,
            "digital_specificity_same_images": _at_threshold(both, digital[screened], threshold)["specificity"]
            if screened.any() else None,
            "with_photo_warning": float(np.mean([any(h in w for w in r[name]["warnings"] for h in RETAKE.values())
                                                 for r in results])),
            "refusals": refusals,
        }
    return figures


def _at_threshold(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    metrics = evaluation.metrics_at(labels, probabilities, threshold)
    return {"sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"]}


def verdicts(figures: dict, names) -> dict[str, bool]:
    """Each proxy rendering against issue 31's targets (the strong glare: refused instead)."""
    digital_auc = figures["digital"]["auc"]
    out = {}
    for name in names:
        row = figures[name]
        if name in REFUSED_RENDERINGS:
            out[name] = row["screened"] <= 0.05
        else:
            out[name] = (row["screened"] >= 0.95 and row["median_abs_dp"] is not None and row["median_abs_dp"] <= 0.05
                         and row["auc"] is not None and row["auc"] >= digital_auc - 0.01)
    return out


def randomised_verdicts(figures: dict, names) -> dict[str, bool]:
    """Each randomised kind against issue 38's targets; "kinds" for the kind right over all of them."""
    out = {}
    for name in names:
        row = figures[name]
        out[name] = (row["screened"] >= 0.95 and row["median_abs_dp"] is not None and row["median_abs_dp"] <= 0.05
                     and row["label_flips"] <= MAX_FLIPS
                     and row["specificity"] >= row["digital_specificity_same_images"] - MAX_SPECIFICITY_LOSS)
    out["kinds"] = float(np.mean([figures[name]["kind_right"] for name in names])) >= MIN_KIND_RIGHT
    return out


def measure(count: int, model: str | None, data_dir, processes: int, renderer: str = "proxy") -> dict:
    predictor = Predictor.load(model)
    examples = split_examples(data_dir, "validation", predictor.card.split_seed)
    chosen = sorted(np.random.default_rng(0).choice(len(examples), min(count, len(examples)), replace=False))
    examples = [examples[i] for i in chosen]
    jobs = [(i, str(e.path), renderer) for i, e in enumerate(examples)]
    with ProcessPoolExecutor(processes, initializer=_load, initargs=(model,)) as pool:
        results = list(pool.map(_one, jobs, chunksize=4))
    threshold = float(predictor.operating_points[DEFAULT_OPERATING_POINT])
    names = list(RENDERERS[renderer][0])
    figures = summarise(results, data.labels_of(examples), threshold, names)
    judged = verdicts(figures, names) if renderer == "proxy" else randomised_verdicts(figures, names)
    return {"model": predictor.name, "sha256": predictor.card.sha256, "images": len(examples),
            "split": "validation (patient-level)", "renderer": renderer, "threshold": threshold,
            "renderings": figures, "meets_targets": judged,
            "cost_on_digital_files_ms": finding_cost(examples[:TIMED])}


def finding_cost(examples: list) -> dict[str, float]:
    """What looking for a film would cost a digital file, which digital first spares it: the median time
    of photo.locate on its decoded pixels, against decoding it whole."""
    raws = [e.path.read_bytes() for e in examples]
    grays = [decode_image(raw).pixels for raw in raws]
    return {"locate": _median_ms(lambda: [photo.locate(g) for g in grays]) / len(grays),
            "decode_image": _median_ms(lambda: [decode_image(raw) for raw in raws]) / len(raws)}


def _median_ms(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(1e3 * (time.perf_counter() - started))
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400, help="validation X-rays rendered (default 400)")
    parser.add_argument("--model", default=None, help="default: the manifest's default")
    parser.add_argument("--data", default=None)
    parser.add_argument("--renderer", choices=list(RENDERERS), default="proxy",
                        help="proxy: core.analysis.photos (fitted on); randomised: benchmarks.randomised_photos")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    result = measure(args.count, args.model, args.data or data.default_data_dir(), args.processes, args.renderer)
    print(json.dumps(result, indent=1))
    if args.save:
        registry.update_card(result["model"], f"photo_{args.renderer}", result)


if __name__ == "__main__":
    main()
