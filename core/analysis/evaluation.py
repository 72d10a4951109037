"""Metrics, operating points, calibration and curves for binary screening."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from core.serving.calibration import apply_calibration, logit, sigmoid  # noqa: F401  part of this module's API

# The screening operating point must miss at most 2% of pneumonia cases...
SCREENING_SENSITIVITY = 0.98
# ...on other machines' images too. At a fixed threshold the shift check
# (benchmarks/shift.py) moved validation sensitivity by up to a point, so the
# threshold is chosen for one point more than required.
SCREENING_MARGIN = 0.01
BALANCED_TOLERANCE = 0.01
CALIBRATION_BINS = 10
CURVE_POINTS = 200
BOOTSTRAP_ROUNDS = 1000


def confusion(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
              weights: np.ndarray | None = None) -> list[list[float]]:
    """[[tn, fp], [fn, tp]]; a probability at or above the threshold means pneumonia. `weights`
    counts each image that many times (a bootstrap resample); without them the counts are integers."""
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    return confusion_matrix(np.asarray(labels), predicted, labels=[0, 1], sample_weight=weights).tolist()


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def metrics_at(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
               weights: np.ndarray | None = None) -> dict:
    (tn, fp), (fn, tp) = confusion(labels, probabilities, threshold, weights)
    precision = _ratio(tp, tp + fp)
    sensitivity = _ratio(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "precision": precision,
        "f1": _ratio(2 * precision * sensitivity, precision + sensitivity),
        "confusion": [[tn, fp], [fn, tp]],
    }


def auc(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC; `weights` counts each image that many times (a bootstrap resample)."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")  # undefined with one class present
    return float(roc_auc_score(labels, probabilities, sample_weight=weights))


def highest_threshold_with_sensitivity(labels: np.ndarray, probabilities: np.ndarray, sensitivity: float,
                                       weights: np.ndarray | None = None) -> float:
    """The highest threshold whose sensitivity reaches the target; `weights` as in `auc`."""
    # Every threshold, not only the ROC's corners: the first one to reach the
    # target may lie on a straight stretch of the curve that roc_curve drops.
    _, tpr, thresholds = roc_curve(labels, probabilities, sample_weight=weights, drop_intermediate=False)
    meets = np.flatnonzero(np.isfinite(thresholds) & (tpr >= sensitivity))
    return float(thresholds[meets[0]]) if meets.size else float(np.min(probabilities))


def specificity_at_sensitivity(labels: np.ndarray, probabilities: np.ndarray, sensitivity: float,
                               weights: np.ndarray | None = None) -> float:
    """The best specificity of any threshold whose sensitivity on these images reaches the target:
    what the ranking allows there, whichever threshold a model ships. `weights` as in `auc`."""
    # A model's shipped screening threshold mixes two things: how well it ranks at the high-sensitivity
    # end, and where validation's hardest pneumonias put the threshold. This reads the first alone.
    if np.min(labels) == np.max(labels):
        return float("nan")  # undefined with one class present, as AUC is
    # The highest threshold that reaches the target refers the fewest normal children of all that do
    threshold = highest_threshold_with_sensitivity(labels, probabilities, sensitivity, weights)
    return metrics_at(labels, probabilities, threshold, weights)["specificity"]


def choose_operating_points(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Thresholds chosen on validation data.

    balanced: the middle of the thresholds whose Youden's J (sensitivity +
    specificity - 1) is within BALANCED_TOLERANCE of the best. With a near-perfect
    validation ROC many thresholds tie; the single argmax sits at an edge of that
    plateau, while its middle leaves room on both sides for data from elsewhere.
    screening: the highest threshold that keeps validation sensitivity at
    0.98 plus SCREENING_MARGIN, so the fewest healthy children are recalled for
    that sensitivity; never above balanced, so screening never misses more.
    """
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    youden = tpr - fpr
    balanced = between_scores(probabilities, float(np.median(thresholds[youden >= youden.max() - BALANCED_TOLERANCE])))
    screening = min(between_scores(probabilities, highest_threshold_with_sensitivity(
        labels, probabilities, SCREENING_SENSITIVITY + SCREENING_MARGIN)), balanced)
    return {"balanced": float(balanced), "screening": float(screening)}


def between_scores(probabilities: np.ndarray, threshold: float) -> float:
    """The threshold moved halfway down to the next lower score: the same labels for these
    images, but none sits exactly on it, where a difference in the last float digits between
    runtimes (Keras, ONNX) would flip its label."""
    lower = np.asarray(probabilities)[np.asarray(probabilities) < threshold]
    return float((threshold + lower.max()) / 2) if lower.size else float(threshold)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """ECE over equal-width bins, with the bins for a reliability diagram."""
    labels, probabilities = np.asarray(labels, float), np.asarray(probabilities, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error, diagram = 0.0, []
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        confidence, observed = probabilities[members].mean(), labels[members].mean()
        error += members.mean() * abs(confidence - observed)
        diagram.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                        "mean_probability": float(confidence), "fraction_positive": float(observed),
                        "count": int(members.sum())})
    return float(error), diagram


def fit_calibration(labels: np.ndarray, raw: np.ndarray) -> dict:
    """Platt scaling on the logit: p = sigmoid(slope * logit(raw) + intercept).

    Unlike a temperature alone, the intercept also undoes the shift that class
    weights put into a model's outputs."""
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(C=1e6).fit(logit(raw).reshape(-1, 1), np.asarray(labels))
    return {"method": "platt", "slope": float(fitted.coef_[0, 0]), "intercept": float(fitted.intercept_[0])}


def binary_cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per-example loss; also ranks the 'top losses' an analyst reviews."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _thin(points: np.ndarray, n: int = CURVE_POINTS) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.unique(np.linspace(0, len(points) - 1, n).round().astype(int))]


def curves(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    fpr, tpr, _ = roc_curve(labels, probabilities)
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    roc = _thin(np.column_stack([fpr, tpr]))
    pr = _thin(np.column_stack([recall, precision]))
    return {"roc": {"fpr": roc[:, 0].round(5).tolist(), "tpr": roc[:, 1].round(5).tolist()},
            "pr": {"recall": pr[:, 0].round(5).tolist(), "precision": pr[:, 1].round(5).tolist()}}


def patient_resample_weights(groups: list[str], rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> np.ndarray:
    """(rounds, images) counts of each image in a bootstrap resample of whole patients
    (images of one patient are not independent, so they are drawn together)."""
    unique, index = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(unique), (rounds, len(unique)))
    per_patient = np.stack([np.bincount(row, minlength=len(unique)) for row in drawn])
    return per_patient[:, index].astype(np.float64)


SPREAD_PERCENTILES = (2.5, 25.0, 50.0, 75.0, 97.5)


def screening_threshold_spread(labels: np.ndarray, probabilities: np.ndarray, groups: list[str],
                               rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> dict[str, float]:
    """Where the screening rule (the highest threshold with sensitivity 0.98 plus the margin) would
    have put the threshold on resampled patients: percentile -> threshold. The threshold is an
    extreme order statistic of the pneumonia scores, so it moves far more between draws than AUC."""
    weights = patient_resample_weights(groups, rounds, seed)
    target = SCREENING_SENSITIVITY + SCREENING_MARGIN
    thresholds = [highest_threshold_with_sensitivity(labels, probabilities, target, w) for w in weights
                  if 0 < w[np.asarray(labels) == 1].sum() and 0 < w[np.asarray(labels) == 0].sum()]
    return {f"{q:g}%": float(np.percentile(thresholds, q)) for q in SPREAD_PERCENTILES}


def bootstrap_intervals(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
                        groups: list[str] | None = None, rounds: int = BOOTSTRAP_ROUNDS,
                        seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals; resamples whole patients when groups are given,
    because images of one patient are not independent."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    counts = patient_resample_weights(groups if groups is not None else np.arange(len(labels)), rounds, seed)
    samples: dict[str, list[float]] = {k: [] for k in ("auc", "accuracy", "sensitivity", "specificity")}
    for count in counts.astype(int):
        chosen = np.repeat(np.arange(len(labels)), count)
        y, p = labels[chosen], probabilities[chosen]
        if y.min() == y.max():
            continue
        at = metrics_at(y, p, threshold)
        samples["auc"].append(auc(y, p))
        for key in ("accuracy", "sensitivity", "specificity"):
            samples[key].append(at[key])
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items() if v}


def report(labels: np.ndarray, probabilities: np.ndarray, operating_points: dict[str, float],
           include_predictions: bool = False) -> dict:
    """The evaluation record: top-level metrics at the balanced operating point.

    With include_predictions, the labels and probabilities themselves, so that
    any threshold can be explored later without the images."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    balanced = metrics_at(labels, probabilities, operating_points["balanced"])
    ece, diagram = expected_calibration_error(labels, probabilities)
    return {
        "n": len(labels),
        "positives": int(labels.sum()),
        **balanced,
        "auc": auc(labels, probabilities),
        # Beside the shipped points: whether a miss of the screening target lies in the ranking or in
        # where the threshold sits, which a site profile can move
        "specificity_at_screening_sensitivity": specificity_at_sensitivity(labels, probabilities,
                                                                           SCREENING_SENSITIVITY),
        "ece": ece,
        "reliability": diagram,
        "operating_points": {
            name: {k: v for k, v in metrics_at(labels, probabilities, t).items()}
            for name, t in operating_points.items()
        },
        "curves": curves(labels, probabilities),
    } | ({"predictions": {"labels": labels.astype(int).tolist(),
                          # Full precision: the thresholds sit exactly on validation scores,
                          # and rounded copies would move those images across them.
                          "probabilities": np.asarray(probabilities, float).tolist()}} if include_predictions else {})


def validation_evidence(labels: np.ndarray, raw: np.ndarray, groups: list[str],
                        calibration: dict | None = None) -> tuple[dict, dict, dict]:
    """Calibration (unless one fitted otherwise is given), operating points and the validation
    report, all from one validation split."""
    calibration = calibration or fit_calibration(labels, raw)
    probabilities = apply_calibration(raw, calibration)
    points = choose_operating_points(labels, probabilities)
    validation = report(labels, probabilities, points, include_predictions=True)
    validation["bootstrap_95ci"] = bootstrap_intervals(labels, probabilities, points["balanced"], groups)
    validation["screening_threshold_spread"] = screening_threshold_spread(labels, probabilities, groups)
    validation["ece_uncalibrated"] = expected_calibration_error(labels, raw)[0]
    return calibration, points, validation


def card_summary(validation: dict) -> dict:
    """The headline validation numbers that a model card carries."""
    keys = ("n", "accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece", "ece_uncalibrated",
            "bootstrap_95ci", "screening_threshold_spread")
    return {"split": "validation (patient-level)", **{k: validation[k] for k in keys}}
