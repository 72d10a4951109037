"""`python -m core screen` on a mix of good and broken files, and `evaluate` on a tiny split."""
import csv
import io
import json

import pytest
from conftest import encode, xray_like

from core import cli
from core.serving import registry
from core.serving.screening import ROW_FIELDS


@pytest.fixture
def models_env(tiny_models, monkeypatch):
    monkeypatch.setenv(registry.MODELS_ENV, str(tiny_models))
    return tiny_models


def test_screen_reports_every_file_and_keeps_going(models_env, tmp_path, capsys):
    import numpy as np

    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a_good.jpeg").write_bytes(encode(xray_like(1, True, 128)))
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "c_text.jpg").write_text("not an image")
    (folder / "d_truncated.jpeg").write_bytes(encode(xray_like(2, False, 128))[:300])
    photo = np.zeros((128, 128, 3), np.uint8)
    photo[..., 0], photo[..., 1] = 220, np.arange(128, dtype=np.uint8)[None, :]
    (folder / "e_photo.png").write_bytes(encode(photo, "PNG"))
    (folder / "f_good.png").write_bytes(encode(xray_like(3, False, 128), "PNG"))
    code = cli.main(["screen", str(folder), str(tmp_path / "missing.jpeg")])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert code == 1
    assert tuple(rows[0]) == ROW_FIELDS
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == 7
    for good in ("a_good.jpeg", "f_good.png"):
        assert by_name[good]["status"] == "ok"
        assert 0.0 <= float(by_name[good]["probability"]) <= 1.0
        assert by_name[good]["label"] in ("NORMAL", "PNEUMONIA")
    assert "empty" in by_name["b_empty.png"]["message"]
    assert "not a supported image" in by_name["c_text.jpg"]["message"]
    assert "truncated" in by_name["d_truncated.jpeg"]["message"]
    assert by_name["e_photo.png"]["status"] == "rejected"
    assert "not a chest X-ray" in by_name["e_photo.png"]["message"]
    assert by_name["missing.jpeg"]["status"] == "error"


def test_screen_json_and_all_ok_exit_code(models_env, tmp_path, capsys):
    path = tmp_path / "x.jpeg"
    path.write_bytes(encode(xray_like(4, True, 128)))
    assert cli.main(["screen", str(path), "--format", "json", "--operating-point", "screening"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["operating_point"] == "screening"


def test_screen_writes_heatmaps(models_env, tmp_path, capsys):
    path = tmp_path / "chest.jpeg"
    path.write_bytes(encode(xray_like(5, True, 128)))
    assert cli.main(["screen", str(path), "--heatmaps", str(tmp_path / "heat")]) == 0
    png = (tmp_path / "heat" / "chest.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_evaluate_writes_the_documented_record(models_env, tiny_data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--data", str(tiny_data), "--split", "test", "--json", str(out),
                     "--top-losses", "3"]) == 0
    [record] = json.loads(out.read_text())
    for key in ("model", "default", "n", "threshold", "accuracy", "sensitivity", "specificity", "precision",
                "f1", "auc", "confusion", "operating_points", "curves", "top_losses"):
        assert key in record, key
    assert record["n"] == 20 and record["default"] is True
    (tn, fp), (fn, tp) = record["confusion"]
    assert tn + fp + fn + tp == 20 and record["accuracy"] == pytest.approx((tn + tp) / 20)
    assert set(record["operating_points"]) == {"balanced", "screening"}
    # The best specificity at sensitivity 0.98 is at least that of any shipped point that reaches it here
    best = record["specificity_at_screening_sensitivity"]
    reaching = [p["specificity"] for p in record["operating_points"].values() if p["sensitivity"] >= 0.98]
    assert reaching and 0 <= best <= 1 and all(best >= s for s in reaching)
    # Each point carries 95% intervals over resampled patients, printed beside it
    for at in record["operating_points"].values():
        for key in ("sensitivity", "specificity"):
            low, high = at["95ci"][key]
            assert 0 <= low <= high <= 1
    assert len(record["top_losses"]) == 3
    printed = capsys.readouterr().out
    assert "default model" in printed and "    screening: sensitivity" in printed
    # The record names the files it measured and the patients its images came from (2 images each)
    card = registry.load_card(record["model"])
    assert (record["sha256"], record["onnx_sha256"]) == (card.sha256, card.onnx["sha256"])
    assert record["patients"] == 10


def test_record_check_files_an_evaluation_under_the_file_it_measured(tiny_models, tiny_data, tmp_path,
                                                                   monkeypatch):
    import shutil

    from core.analysis import checks

    models = shutil.copytree(tiny_models, tmp_path / "models")
    monkeypatch.setenv(registry.MODELS_ENV, str(models))
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--data", str(tiny_data), "--split", "test", "--json", str(out)]) == 0
    card = registry.load_card("cnn_small")
    assert checks.current_check(card) == ("not checked", None)
    assert cli.main(["record-check", str(out), "--date", "2026-12-07"]) == 0
    [stored] = registry.load_shared(registry.EXTERNAL_CHECKS)["checks"]
    assert (stored["sha256"], stored["onnx_sha256"], stored["date"]) == (card.sha256, card.onnx["sha256"],
                                                                         "2026-12-07")
    assert stored["data"] == "test split: 20 X-rays of 10 patients (10 NORMAL, 10 PNEUMONIA)"
    assert checks.current_check(card) == ("checked", stored)
