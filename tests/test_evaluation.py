"""Metrics against confusion matrices worked out by hand."""
import numpy as np
import pytest

from core.analysis import evaluation

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
PROBS = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.8, 0.3, 0.7, 0.55, 0.95])


def test_metrics_match_a_hand_counted_confusion_matrix():
    # threshold 0.5: negatives 0.1 0.4 0.6 0.2 -> tn=3 fp=1; positives 0.9 0.8 0.3 0.7 0.55 0.95 -> fn=1 tp=5
    m = evaluation.metrics_at(LABELS, PROBS, 0.5)
    assert m["confusion"] == [[3, 1], [1, 5]]
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["sensitivity"] == pytest.approx(5 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(5 / 6)


def test_threshold_is_inclusive():
    assert evaluation.confusion([0, 1], [0.5, 0.5], 0.5) == [[0, 1], [0, 1]]


def test_auc_counts_ordered_pairs():
    # 24 positive-negative pairs; misordered: 0.3 below 0.4 and 0.6; 0.55 below 0.6 -> 3 of 24
    assert evaluation.auc(LABELS, PROBS) == pytest.approx(21 / 24)


def test_operating_points():
    points = evaluation.choose_operating_points(LABELS, PROBS)
    # Youden's J is best at 0.55 (sens 5/6, spec 3/4) ... or 0.7 (4/6, 4/4): J = 0.583 vs 0.667;
    # the threshold sits halfway down to the next lower score, 0.6, so no image lies on it
    assert points["balanced"] == pytest.approx(0.65)
    # sensitivity >= 0.98 (+ 0.01 margin) needs every positive: the lowest positive, 0.3, and
    # halfway down to the next score, 0.2
    assert points["screening"] == pytest.approx(0.25)
    at = evaluation.metrics_at(LABELS, PROBS, points["screening"])
    assert at["sensitivity"] == 1.0 and at["specificity"] == pytest.approx(2 / 4)


def test_screening_never_sits_above_balanced():
    # 100 positives (one low, at 0.3) and 200 negatives (one high, at 0.5). Youden's J:
    # 0.99 at 0.8, 0.985 at 0.5, 0.995 at 0.3: all within 0.01 of the best, so
    # balanced is their middle, 0.5. Sensitivity 0.99 alone would allow 0.8, but
    # screening may not miss more than balanced does.
    positives = np.r_[np.linspace(0.8, 0.99, 99), 0.3]
    negatives = np.r_[np.linspace(0.01, 0.2, 199), 0.5]
    labels, probs = np.r_[np.ones(100), np.zeros(200)], np.r_[positives, negatives]
    points = evaluation.choose_operating_points(labels, probs)
    # 0.5, moved halfway down to the next lower score (0.3) so that no image sits on it
    assert points["balanced"] == pytest.approx(0.4)
    assert points["screening"] == pytest.approx(0.4)


def test_highest_threshold_with_sensitivity_sees_thresholds_between_roc_corners():
    # No negative between the positives at 0.3, 0.25 and 0.2: those points lie on one
    # straight (vertical) stretch of the ROC, whose middle roc_curve drops by default.
    labels = np.r_[np.ones(100), np.zeros(100)]
    probs = np.r_[np.linspace(0.9, 0.99, 97), 0.3, 0.25, 0.2, np.linspace(0.01, 0.1, 100)]
    assert evaluation.highest_threshold_with_sensitivity(labels, probs, 0.99) == pytest.approx(0.25)
    assert evaluation.highest_threshold_with_sensitivity(labels, probs, 0.98) == pytest.approx(0.3)


def test_specificity_at_sensitivity_is_the_best_any_threshold_allows():
    # 50 pneumonias, 49 at 0.9 and one at 0.2; 10 normals, three of them (0.25, 0.3, 0.35) above that one.
    labels = np.r_[np.ones(50), np.zeros(10)]
    probs = np.r_[np.full(49, 0.9), 0.2, 0.25, 0.3, 0.35, 0.1, 0.15, np.full(5, 0.05)]
    # 49 of 50 is 0.98: a threshold at 0.9 refers no normal child
    assert evaluation.specificity_at_sensitivity(labels, probs, 0.98) == 1.0
    # every pneumonia: the threshold must come down to 0.2, which refers the three above it
    assert evaluation.specificity_at_sensitivity(labels, probs, 0.99) == pytest.approx(0.7)
    # Weights count images: the low pneumonia twice makes 49 of 51, below 0.98...
    weights = np.ones(60)
    weights[49] = 2
    assert evaluation.specificity_at_sensitivity(labels, probs, 0.98, weights) == pytest.approx(0.7)
    # ...and the three high normals left out of a resample leave nothing to refer.
    weights[50:53] = 0
    assert evaluation.specificity_at_sensitivity(labels, probs, 0.98, weights) == 1.0
    assert np.isnan(evaluation.specificity_at_sensitivity(np.ones(5), np.linspace(0.1, 0.9, 5), 0.98))


def test_screening_threshold_keeps_a_margin_above_the_required_sensitivity():
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(300), np.zeros(100)]
    probs = np.r_[rng.beta(5, 2, 300), rng.beta(2, 5, 100)]  # overlapping classes
    points = evaluation.choose_operating_points(labels, probs)

    def highest_threshold_with(sensitivity):  # brute force over every score
        return max(t for t in probs if evaluation.metrics_at(labels, probs, t)["sensitivity"] >= sensitivity)

    assert points["screening"] < points["balanced"]
    assert points["screening"] == pytest.approx(evaluation.between_scores(probs, highest_threshold_with(0.99)))
    assert highest_threshold_with(0.98) > points["screening"]  # the margin costs threshold, as intended
    # Same labels as the score itself, and no image on a threshold: runtimes that differ in the
    # last float digits still agree on every label.
    assert evaluation.metrics_at(labels, probs, points["screening"])["sensitivity"] >= 0.99
    assert not set(points.values()) & set(probs.tolist())


def test_expected_calibration_error_by_hand():
    labels = np.array([1, 0, 1, 1])
    probs = np.array([0.05, 0.05, 0.95, 0.95])
    # bin 0: mean p 0.05, positives 1/2 -> |0.05-0.5| * 2/4; bin 9: 0.95 vs 1 -> 0.05 * 2/4
    ece, diagram = evaluation.expected_calibration_error(labels, probs)
    assert ece == pytest.approx(0.45 * 0.5 + 0.05 * 0.5)
    assert [b["count"] for b in diagram] == [2, 2]


def test_platt_calibration_undoes_shift_and_overconfidence():
    rng = np.random.default_rng(0)
    true_p = np.where(rng.random(4000) < 0.5, 0.75, 0.25)
    labels = (rng.random(4000) < true_p).astype(int)  # the truth is 75% or 25% sure...
    raw = evaluation.sigmoid(evaluation.logit(true_p) * 3 - 1.0)  # ...the model is overconfident and shifted
    calibration = evaluation.fit_calibration(labels, raw)
    assert calibration["slope"] == pytest.approx(1 / 3, rel=0.15)
    assert calibration["intercept"] == pytest.approx(1 / 3, abs=0.1)
    fixed = evaluation.apply_calibration(raw, calibration)
    assert evaluation.expected_calibration_error(labels, fixed)[0] < 0.03
    assert evaluation.expected_calibration_error(labels, raw)[0] > 0.15


def test_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(labels * 0.4 + rng.random(300) * 0.6, 0, 1)
    intervals = evaluation.bootstrap_intervals(labels, probs, 0.5, rounds=200)
    auc = evaluation.auc(labels, probs)
    assert intervals["auc"][0] < auc < intervals["auc"][1]


def test_stored_predictions_reproduce_the_metrics_at_the_operating_points():
    # Thresholds sit exactly on validation scores: the stored copy must keep every
    # image on the same side of them (rounded copies moved some across).
    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(300), np.zeros(100)].astype(int)
    probs = np.r_[rng.beta(5, 2, 300), rng.beta(2, 5, 100)]
    points = evaluation.choose_operating_points(labels, probs)
    record = evaluation.report(labels, probs, points, include_predictions=True)
    stored = record["predictions"]
    for name, threshold in points.items():
        again = evaluation.metrics_at(np.array(stored["labels"]), np.array(stored["probabilities"]), threshold)
        assert again == record["operating_points"][name]


def test_the_screening_threshold_spread_follows_the_hardest_pneumonias_of_each_resample():
    # 100 patients with one pneumonia each scored 0.50..0.99 and 100 normal ones below 0.4: the rule's
    # threshold (sensitivity >= 0.99) is the lowest or second-lowest pneumonia score of each draw,
    # which lies among the lowest few scores whichever patients a draw leaves out.
    labels = np.array([1] * 100 + [0] * 100)
    scores = np.concatenate([np.linspace(0.50, 0.99, 100), np.linspace(0.0, 0.39, 100)])
    patients = [f"p{i}" for i in range(200)]
    spread = evaluation.screening_threshold_spread(labels, scores, patients, rounds=300)
    assert list(spread) == ["2.5%", "25%", "50%", "75%", "97.5%"]
    assert all(a <= b for a, b in zip(list(spread.values()), list(spread.values())[1:]))
    assert 0.50 <= spread["2.5%"] and spread["97.5%"] <= scores[:100][6] + 1e-9
    # With every pneumonia scored alike, every draw puts the threshold at that one score.
    flat = evaluation.screening_threshold_spread(labels, np.where(labels == 1, 0.8, 0.2), patients, rounds=50)
    assert set(flat.values()) == {0.8}


# An `evaluate --json` record as the command writes it, written out by hand (only what a check keeps).
EVALUATED = {
    "model": "cnn_small", "default": False, "split": "test", "sha256": "ab" * 32, "onnx_sha256": "cd" * 32,
    "patients": 427, "n": 624, "positives": 390, "auc": 0.98213, "ece": 0.08161,
    "specificity_at_screening_sensitivity": 0.85897,
    "operating_points": {
        "balanced": {"threshold": 0.51042, "accuracy": 0.91747, "sensitivity": 0.99231, "specificity": 0.79060,
                     "95ci": {"auc": [0.97118, 0.98904], "accuracy": [0.89, 0.94],
                              "sensitivity": [0.98333, 1.0], "specificity": [0.73684, 0.84211]}},
        "screening": {"threshold": 0.14361, "accuracy": 0.86218, "sensitivity": 0.99744, "specificity": 0.63248,
                      "95ci": {"auc": [0.97118, 0.98904], "accuracy": [0.83, 0.89],
                               "sensitivity": [0.99174, 1.0], "specificity": [0.56716, 0.69892]}},
    },
}


def test_a_record_becomes_a_check_of_its_file_rounded_as_a_few_hundred_x_rays_support():
    from core.analysis import checks

    assert checks.check_from_record(EVALUATED, "2026-12-07") == {
        "model": "cnn_small", "sha256": "ab" * 32, "onnx_sha256": "cd" * 32, "date": "2026-12-07",
        "data": "test split: 624 X-rays of 427 patients (234 NORMAL, 390 PNEUMONIA)",
        "by": "python -m core evaluate --split test", "auc": 0.982, "auc_95ci": [0.971, 0.989],
        "balanced": {"threshold": 0.51, "accuracy": 0.917, "sensitivity": 0.992, "specificity": 0.791,
                     "95ci": {"sensitivity": [0.983, 1.0], "specificity": [0.737, 0.842]}},
        "screening": {"threshold": 0.144, "accuracy": 0.862, "sensitivity": 0.997, "specificity": 0.632,
                      "95ci": {"sensitivity": [0.992, 1.0], "specificity": [0.567, 0.699]}},
        "best_specificity_at_sensitivity_0.98": 0.859, "ece": 0.082, "default_then": False,
    }


@pytest.mark.parametrize("change, reason", [({"sha256": None}, "no file sha256"),
                                            ({"split": "validation"}, "not independent"),
                                            ({"site": "clinic"}, "site profile clinic")])
def test_a_record_that_is_no_independent_check_of_a_known_file_is_refused(change, reason):
    from core.analysis import checks

    with pytest.raises(checks.CheckError, match=reason):
        checks.check_from_record(EVALUATED | change, "2026-12-07")


def test_recording_again_replaces_that_check_and_keeps_every_other(tmp_path):
    import json

    from core.analysis import checks

    earlier = {"model": "cnn_small", "sha256": "ef" * 32, "date": "2026-11-26", "data": "test split"}
    (tmp_path / "external_checks.json").write_text(json.dumps({"about": "kept", "checks": [earlier]}))
    checks.record_checks([EVALUATED], "2026-12-07", directory=tmp_path)
    checks.record_checks([EVALUATED | {"auc": 0.5}], "2026-12-07", directory=tmp_path)
    stored = json.loads((tmp_path / "external_checks.json").read_text())
    assert stored["about"] == "kept" and [c["sha256"] for c in stored["checks"]] == ["ef" * 32, "ab" * 32]
    assert stored["checks"][1]["auc"] == 0.5


def test_a_model_shows_only_the_checks_of_its_current_files(tmp_path):
    import json
    import shutil

    from core.analysis import checks
    from core.serving import registry

    for name in ("cnn_small", "cxrnet", "mlp"):
        shutil.copy(registry.models_dir() / f"{name}.json", tmp_path)
    small, cxrnet, mlp = (registry.load_card(n, tmp_path) for n in ("cnn_small", "cxrnet", "mlp"))
    stored = [{"model": "cnn_small", "sha256": small.sha256, "date": "2026-11-26"},
              {"model": "cnn_small", "sha256": small.sha256, "date": "2026-12-01"},
              {"model": "cnn_small", "sha256": "00" * 32, "date": "2026-12-05"},  # another file, later
              # cxrnet's Keras file, but measured through another ONNX export than the one in use
              {"model": "cxrnet", "sha256": cxrnet.sha256, "onnx_sha256": "11" * 32, "date": "2026-12-01"}]
    (tmp_path / "external_checks.json").write_text(json.dumps({"checks": stored}))
    assert checks.current_check(small, tmp_path) == ("checked", stored[1])
    assert checks.current_check(cxrnet, tmp_path) == ("an earlier file", None)
    assert checks.current_check(mlp, tmp_path) == ("not checked", None)
