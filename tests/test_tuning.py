"""Learning-rate finder and hyper-parameter search on tiny generated data."""
import json

import numpy as np

from core import cli
from core.learning.pipeline import load_split
from core.learning.tuning import find_learning_rate, suggest
from core.learning.zoo import get_architecture
from core.serving import registry


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = np.geomspace(1e-5, 1, 50)
    # loss falls fastest around 1e-3, bottoms at 1e-2, then blows up
    smoothed = 1 - 0.5 * np.tanh((np.log10(rates) + 3) * 2) + np.where(rates > 1e-2, (np.log10(rates) + 2) ** 2, 0)
    rate, method = suggest(rates, smoothed)
    assert 5e-4 < rate < 2e-3 and "steepest" in method


def test_finder_suggests_a_rate_inside_the_range_and_below_divergence(tiny_data):
    arch = get_architecture("cnn_small", size=32)
    train_set, _ = load_split(tiny_data, arch.preprocess, 42, log=lambda *_: None)
    result = find_learning_rate(arch, arch.recipe, train_set, steps=60, min_lr=1e-5, max_lr=10.0)
    assert result["rates"][0] <= result["suggestion"] <= result["rates"][-1]
    if result["diverged_at"]:
        assert result["suggestion"] < result["diverged_at"]
    assert len(result["smoothed"]) == len(result["rates"])


def test_train_with_lr_auto_records_where_the_rate_came_from(tiny_data, tmp_path):
    assert cli.main(["train", "--arch", "cnn_small", "--data", str(tiny_data), "--size", "32", "--epochs", "1",
                     "--lr", "auto", "--models-dir", str(tmp_path)]) == 0
    card = registry.load_card("cnn_small", tmp_path)
    assert "from the finder" in card.training["hyperparameters_from"]
    assert card.training["recipe"]["learning_rate"] > 0


def test_tune_runs_writes_its_table_and_resumes(tiny_data, tmp_path, capsys):
    args = ["tune", "--arch", "mlp", "--data", str(tiny_data), "--trials", "2", "--epochs", "1",
            "--dir", str(tmp_path / "search")]
    assert cli.main(args) == 0
    rows = json.loads((tmp_path / "search" / "mlp_results.json").read_text())
    assert len(rows) == 2 and all(0.0 <= r["val_auc"] <= 1.0 for r in rows)
    first = capsys.readouterr().out
    assert "trial 1 of 2" in first and "trial 2 of 2" in first
    assert cli.main(args) == 0  # the same directory: the finished trials are kept, none runs again
    again = capsys.readouterr().out
    assert "of 2" not in again and again.count("\n") >= 3
    best = tmp_path / "search" / "mlp_best.json"
    assert cli.main(["train", "--config", str(best), "--data", str(tiny_data), "--epochs", "1",
                     "--models-dir", str(tmp_path / "models")]) == 0
    card = registry.load_card("mlp", tmp_path / "models")
    assert "keras-tuner" in card.training["hyperparameters_from"]
    assert card.preprocess["size"] == json.loads(best.read_text())["size"]
