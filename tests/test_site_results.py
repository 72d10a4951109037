"""Site calibration from a clinic's own screening results, diagnoses added as they come back, and
an archive's rows rethresholded at a site's points without running a model."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from conftest import encode, real_data_dir, requires_real_data, run_core, xray_like
from streamlit.testing.v1 import AppTest
from test_app import choose_server
from test_site import stub_predictor

from core.analysis import evaluation, site_calibration
from core.analysis.data import patient_id, patient_split
from core.serving import archive, screening
from core.serving.predictor import Predictor
from core.serving.site import SiteProfile, SiteProfileError, seal
from ui.common import format_probability

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.98
SHA = {"a": "a" * 64, "b": "b" * 64}


def site_folder(root: Path, per_class: int, start: int = 0) -> Path:
    """NORMAL/ and PNEUMONIA/ of synthetic X-rays, two per patient, and one byte-identical copy."""
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            seed = 1000 * label + start + i
            (root / name / f"IM-{seed // 2:04d}-{seed % 2 + 1:04d}.jpeg").write_bytes(
                encode(xray_like(seed, bool(label), 200)))
    first = min((root / "PNEUMONIA").iterdir())
    shutil.copy(first, root / "PNEUMONIA" / "copy-of-the-first.jpeg")
    return root


def with_diagnoses(rows: list[dict], name_column: str) -> list[dict]:
    """Rows as a clinic fills them in: the diagnosis (here, the folder's) and the patient (the file's)."""
    for row in rows:
        name = Path(str(row[name_column]))
        row["diagnosis"], row["patient"] = name.parent.name, patient_id(name.name)
    return rows


def as_csv(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def assert_same_profile(a: dict, b: dict) -> None:
    assert a["set_sha256"] == b["set_sha256"]
    assert {k: a["counts"][k] for k in ("NORMAL", "PNEUMONIA", "patients")} == \
           {k: b["counts"][k] for k in ("NORMAL", "PNEUMONIA", "patients")}
    for name in ("screening", "balanced"):
        assert abs(a["operating_points"][name] - b["operating_points"][name]) <= 1e-9
    assert a["calibration"]["source"] == b["calibration"]["source"]
    for name in ("slope", "intercept"):
        assert abs(a["calibration"].get(name, 0.0) - b["calibration"].get(name, 0.0)) <= 1e-9


def test_a_profile_from_results_equals_the_one_from_the_image_folders(tmp_path):
    folder = site_folder(tmp_path / "clinic", 55)  # >= 50 a class: the calibration is refitted
    predictor = Predictor.load()
    from_folders, _ = site_calibration.calibrate(predictor, site_calibration.score(
        predictor, site_calibration.read_folder(folder)), TARGET, "clinic")
    assert from_folders["calibration"]["source"] == "site"
    assert from_folders["counts"]["PNEUMONIA"] == 55  # the copy counted once

    # The Screen page's and `core screen`'s CSV, with the diagnoses filled in.
    screened = screening.rows_to_csv(screening.screen_paths(predictor, [folder])).encode()
    rows = with_diagnoses(site_calibration.parse_results(screened, "results.csv"), "file")
    local = site_calibration.from_results(predictor, rows)
    assert local.source["repeated"] == 1 and local.resampled_by == "patient"
    from_results, _ = site_calibration.calibrate(predictor, local, TARGET, "clinic")
    assert_same_profile(from_folders, from_results)
    assert from_results["made_from"]["kind"] == "results" and from_folders["made_from"]["kind"] == "images"

    # An archive job's folder, its rows in any order.
    archive.screen_archive(folder, tmp_path / "out", archive.JobSpec(), fmt="csv")
    rows = with_diagnoses(site_calibration.read_results(tmp_path / "out")[::-1], "path")
    from_archive, _ = site_calibration.calibrate(predictor, site_calibration.from_results(predictor, rows),
                                                 TARGET, "clinic")
    assert_same_profile(from_folders, from_archive)


@requires_real_data
def test_on_validation_patients_results_equal_folders_and_hold_sensitivity_on_unseen_patients():
    predictor = Predictor.load()
    _, validation = patient_split(real_data_dir())
    patients = sorted({e.patient for e in validation})
    fitted = set(np.random.default_rng(0).permutation(patients)[: len(patients) // 2])
    fit = [e for e in validation if e.patient in fitted]
    files = [(str(e.path), e.path.read_bytes(), e.label) for e in fit]
    from_folders, _ = site_calibration.calibrate(predictor, site_calibration.score_files(predictor, files), TARGET)

    rows = [screening.screen_bytes(predictor, name, data).to_dict() for name, data, _ in files]
    for row, (name, _, label) in zip(rows, files):
        row["diagnosis"], row["patient"] = ("NORMAL", "PNEUMONIA")[label], patient_id(Path(name).name)
    from_results, _ = site_calibration.calibrate(predictor, site_calibration.from_results(predictor, rows), TARGET)
    assert_same_profile(from_folders, from_results)

    unseen = [e for e in validation if e.patient not in fitted]
    scored = site_calibration.score_files(predictor, [(str(e.path), e.path.read_bytes(), e.label) for e in unseen])
    profile = SiteProfile.from_content(from_results, "half")
    at = evaluation.metrics_at(scored.labels, evaluation.apply_calibration(scored.raw, profile.calibration),
                               profile.operating_points["screening"])
    assert at["sensitivity"] >= 0.97, at


RECIPE = "r" * 64  # the stub model's raw recipe


def stub(sha: str = SHA["a"]):
    predictor = stub_predictor(sha)
    predictor.raw_recipe = RECIPE
    return predictor


def row(name: str, diagnosis: str = "PNEUMONIA", sha: str = SHA["a"], image: str | None = None,
        raw: float | str = 0.8, status: str = "ok", patient: str = "", recipe: str = RECIPE) -> dict:
    return {"file": name, "status": status, "model_sha256": sha, "raw_output": raw, "raw_recipe": recipe,
            "diagnosis": diagnosis, "image_sha256": image or hashlib.sha256(name.encode()).hexdigest(),
            "patient": patient}


def test_rows_of_another_model_unscreened_unlabelled_unreadable_or_repeated_are_counted_and_not_used():
    rows = [row("good1", raw=0.9, image="1" * 64, patient="P1"), row("good2", "normal", raw=0.2, image="2" * 64),
            row("good3", " Pneumonia ", raw="0.7", image="3" * 64),
            row("other1", sha=SHA["b"]), row("other2", sha=SHA["b"]),
            row("refused", status="rejected", raw=""),
            row("blank1", ""), row("blank2", "  "), row("maybe", "perhaps"), row("old", raw=""),
            row("again", raw=0.9, image="1" * 64), row("both1", "NORMAL", image="4" * 64),
            row("both2", "PNEUMONIA", image="4" * 64), row("zoomed", recipe="z" * 64)]
    local = site_calibration.from_results(stub(), rows)
    assert sorted(local.raw.tolist()) == [0.2, 0.7, 0.9] and sorted(local.labels.tolist()) == [0, 1, 1]
    assert local.source == {"kind": "results", "rows": 14, "not_screened": 1, "other_model": 3, "unlabelled": 2,
                            "unreadable": 2, "repeated": 1, "conflicting": 2, "used": 3, "patients_given": 1}
    reasons = dict(local.refused)
    assert set(reasons) == {"other1", "other2", "zoomed", "refused", "blank1", "blank2", "maybe", "old", "again",
                            "both1", "both2"}
    assert "another model file" in reasons["other1"] and "zooms" in reasons["zoomed"] and "good1" in reasons["again"]
    assert "both diagnoses" in reasons["both1"] and "perhaps" in reasons["maybe"]
    assert local.resampled_by == "patient where the patient column is filled, else image"


def test_editing_one_diagnosis_changes_the_set_digest():
    rng = np.random.default_rng(1)
    rows = [row(f"x{i}", "PNEUMONIA" if i % 3 else "NORMAL", raw=float(rng.uniform(0.05, 0.95)), image=f"{i:064x}")
            for i in range(60)]
    predictor = stub()
    first = site_calibration.from_results(predictor, rows)
    rows[7]["diagnosis"] = "NORMAL" if rows[7]["diagnosis"] == "PNEUMONIA" else "PNEUMONIA"
    edited = site_calibration.from_results(predictor, rows)
    assert first.set_digest() != edited.set_digest()
    unchanged = site_calibration.from_results(predictor, rows[::-1])  # the order of the rows does not count
    assert unchanged.set_digest() == edited.set_digest()
    content, _ = site_calibration.calibrate(predictor, edited, TARGET)
    assert content["set_sha256"] == edited.set_digest() and "x7" not in json.dumps(content)


def _rows(folder: Path) -> list[dict]:
    return archive.read_results(folder).sort_by("path").to_pylist()


def test_calibrate_site_from_results_then_rethreshold_an_archive_and_resume_it(tmp_path):
    src = site_folder(tmp_path / "src", 12)
    (src / "NORMAL" / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    screened = run_core("screen", str(src), "--format", "csv")
    rows = with_diagnoses(site_calibration.parse_results(screened.stdout.encode(), "r.csv"), "file")
    (tmp_path / "results.csv").write_bytes(as_csv(rows))
    profile_path = tmp_path / "clinic.json"
    made = run_core("calibrate-site", "--from-results", str(tmp_path / "results.csv"), "--out", str(profile_path))
    assert made.returncode == 0, made.stderr[-2000:]
    assert "made from screening results: 24 of 26 rows used" in made.stdout
    assert "notes.png" in made.stderr and "copy-of-the-first.jpeg" in made.stderr
    content = json.loads(profile_path.read_text())
    assert content["made_from"]["kind"] == "results" and content["resampled_by"] == "patient"

    job = run_core("screen", str(src), "--out", str(tmp_path / "out"))
    assert job.returncode == 0, job.stderr[-2000:]
    # The archive's rows with the diagnoses in a file of their own, keyed by the rows' paths.
    diagnoses = [{"path": r["path"], "diagnosis": Path(r["path"]).parent.name, "patient": patient_id(r["path"])}
                 for r in _rows(tmp_path / "out")]
    (tmp_path / "diagnoses.csv").write_bytes(as_csv(diagnoses))
    from_archive = run_core("calibrate-site", "--from-results", str(tmp_path / "out"), "--diagnoses",
                            str(tmp_path / "diagnoses.csv"), "--out", str(tmp_path / "from-archive.json"))
    assert from_archive.returncode == 0, from_archive.stderr[-2000:]
    assert_same_profile(content, json.loads((tmp_path / "from-archive.json").read_text()))

    # A run folder without its record (a job killed as it began) vouches for no row: left out, not doubled.
    (run,) = archive.runs(tmp_path / "out")
    shutil.copytree(run, tmp_path / "out" / "run-00000000T000000-copy")
    (tmp_path / "out" / "run-00000000T000000-copy" / "_run.json").unlink()
    done = run_core("screen", "--rethreshold", str(tmp_path / "out"), "--site", str(profile_path),
                    "--out", str(tmp_path / "clinic-out"))
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = _rows(tmp_path / "out"), _rows(tmp_path / "clinic-out")
    assert [r["path"] for r in before] == [r["path"] for r in after] and len(after) == 26
    point = content["operating_points"]["screening"]
    slope, intercept = content["calibration"]["slope"], content["calibration"]["intercept"]
    for old, new in zip(before, after):
        assert new["raw_output"] == old["raw_output"] and new["error"] == old["error"]
        if old["raw_output"] is None:
            assert new["probability"] is None and new["label"] is None
            continue
        logit = np.log(old["raw_output"] / (1 - old["raw_output"]))
        expected = 1 / (1 + np.exp(-(slope * logit + intercept)))
        assert abs(new["probability"] - expected) < 1e-12 and new["threshold"] == point
        assert new["label"] == ("PNEUMONIA" if expected >= point else "NORMAL") and new["site"] == "clinic"

    # The rethresholded folder is the job screening with the profile makes: a resume adds only new files.
    (src / "PNEUMONIA" / "new.jpeg").write_bytes(encode(xray_like(4242, True, 200)))
    resumed = run_core("screen", str(src), "--out", str(tmp_path / "clinic-out"), "--site", str(profile_path),
                       "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "1 files in" in resumed.stderr and "26 files were already screened" in resumed.stderr
    assert len(_rows(tmp_path / "clinic-out")) == 27

    other = seal({**content, "model_sha256": "0" * 64})
    (tmp_path / "other.json").write_text(json.dumps(other))
    for args, said in [(["--site", str(tmp_path / "other.json")], "another file of model"),
                       (["--site", str(profile_path), "--format", "csv"], "not --format"),
                       (["--site", str(profile_path), "--resume"], "not --resume")]:
        refused = run_core("screen", "--rethreshold", str(tmp_path / "out"), *args, "--out", str(tmp_path / "other"))
        assert refused.returncode == 2 and said in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()
    missing = run_core("screen", "--rethreshold", str(tmp_path / "typo"), "--site", str(profile_path),
                       "--out", str(tmp_path / "other"))
    assert missing.returncode == 2 and "not a folder" in missing.stderr and not (tmp_path / "typo").exists()


def test_a_results_file_saved_otherwise_is_refused_in_one_line_naming_what_is_missing(tmp_path):
    rows = [row("a.jpeg"), row("b.jpeg", "NORMAL")]
    semicolons = as_csv(rows).decode().replace(",", ";").encode()
    with pytest.raises(ValueError, match="no model_sha256, raw_output, raw_recipe, image_sha256, diagnosis, file column"):
        site_calibration.parse_results(semicolons, "results.csv")
    with pytest.raises(ValueError, match="expected the CSV or JSON"):
        site_calibration.parse_results(b"[1, 2]", "results.json")
    trailing = as_csv(rows) + b",,,,,,,,\n"
    assert len(site_calibration.parse_results(trailing, "results.csv")) == 2
    (tmp_path / "r.csv").write_bytes(semicolons)
    done = run_core("calibrate-site", "--from-results", str(tmp_path / "r.csv"), "--out", str(tmp_path / "s.json"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "raw_output" in done.stderr


def test_results_of_other_zooms_are_not_rescored_and_a_profile_of_them_is_refused():
    predictor = Predictor.load()
    result = predictor.screen(encode(xray_like(3, True, 200)))
    zoomed = predictor.with_test_time_zooms([1.0])
    assert zoomed.raw_recipe != predictor.raw_recipe
    with pytest.raises(ValueError, match="zooms"):
        zoomed.rescore(result)
    rows = [row(f"x{i}", "PNEUMONIA" if i % 2 else "NORMAL", predictor.card.sha256, raw=0.1 + 0.01 * i,
                recipe=predictor.raw_recipe) for i in range(40)]
    content, _ = site_calibration.calibrate(predictor, site_calibration.from_results(predictor, rows), TARGET, "c")
    profile = SiteProfile.from_content(content, "c")
    predictor.with_site(profile)
    with pytest.raises(SiteProfileError, match="zooms"):
        zoomed.with_site(profile)


def test_rethresholding_runs_no_model(tmp_path, monkeypatch):
    from core.serving import network
    from core.serving.archive.rethreshold import rethreshold

    src = site_folder(tmp_path / "src", 6)
    archive.screen_archive(src, tmp_path / "out", archive.JobSpec())
    predictor = Predictor.load()
    rows = with_diagnoses(_rows(tmp_path / "out"), "path")
    content, _ = site_calibration.calibrate(predictor, site_calibration.from_results(predictor, rows), TARGET, "s")

    def no_model(*_, **__):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(network.OnnxNetwork, "__init__", no_model)
    monkeypatch.setattr(Predictor, "load", no_model)
    data = json.dumps(content).encode()
    summary = rethreshold(tmp_path / "out", tmp_path / "new", SiteProfile.from_bytes(data, "s"), data, "screening")
    assert summary.files == 13 and summary.screened == 13
    assert {r["threshold"] for r in _rows(tmp_path / "new")} == {content["operating_points"]["screening"]}
    assert ds.dataset(str(tmp_path / "new"), format="parquet", exclude_invalid_files=True).count_rows() == 13


def test_site_page_calibrates_from_a_results_file():
    rows = [row(f"IM-{i:04d}-0001.jpeg", "PNEUMONIA" if i % 2 else "NORMAL",
                raw=float(np.clip(0.5 + (0.3 if i % 2 else -0.3) + 0.2 * np.sin(i), 0.01, 0.99)), image=f"{i:064x}")
            for i in range(80)]
    predictor = Predictor.load()
    for r in rows:
        r["model_sha256"], r["model"], r["raw_recipe"] = predictor.card.sha256, predictor.name, predictor.raw_recipe
    rows.append(row("other-model.jpeg", sha=SHA["b"]))
    app = AppTest.from_file(str(ROOT / "app_pages" / "site.py"), default_timeout=180)
    app.run()
    app.file_uploader[0].set_value(("results.csv", as_csv(rows), "text/csv")).run()
    assert any("81 rows, 80 usable" in c.value for c in app.caption)
    app.button[0].click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("other-model.jpeg" in m.value and "another model file" in m.value for m in app.markdown)
    assert app.get("download_button") and any("resampled by image" in c.value for c in app.caption)


def test_screen_page_offers_labellable_results_and_rescores_its_batch_for_a_profile(tmp_path, monkeypatch):
    predictor = Predictor.load()
    images = {f"chest{i}.jpeg": encode(xray_like(i, bool(i % 2), 256)) for i in range(6)}
    app = choose_server(AppTest.from_file(str(ROOT / "app_pages" / "screen.py"), default_timeout=180).run())
    app.file_uploader[0].set_value([(n, b, "image/jpeg") for n, b in images.items()]).run()
    assert any("Keep this file" in c.value for c in app.caption)
    shipped = {m.value for m in app.metric}

    # A profile refitted on 60 rows of each class, its calibration far from the shipped one.
    rng = np.random.default_rng(2)
    rows = [row(f"x{i}", "PNEUMONIA" if i % 2 else "NORMAL", predictor.card.sha256,
                raw=float(rng.uniform(0.5, 1.0) if i % 2 else rng.uniform(0.3, 0.9)), recipe=predictor.raw_recipe)
            for i in range(120)]
    content, _ = site_calibration.calibrate(predictor, site_calibration.from_results(predictor, rows), TARGET, "c")
    assert content["calibration"]["source"] == "site"
    slope, intercept = content["calibration"]["slope"], content["calibration"]["intercept"]
    expected = set()
    for data in images.values():
        raw = predictor.screen(data).raw_output
        expected.add(format_probability(1 / (1 + np.exp(-(slope * np.log(raw / (1 - raw)) + intercept)))))

    def no_forward(*_):
        raise AssertionError("screened again")

    monkeypatch.setattr(Predictor, "_forward", no_forward)
    app.selectbox[0].set_value("Upload a site profile…").run()
    app.file_uploader(key="site_upload").set_value(("c.json", json.dumps(content).encode(), "application/json")).run()
    assert not app.exception, [e.value for e in app.exception]
    point = content["operating_points"]["screening"]
    assert any(f"threshold {point:.3f}" in c.value and "site c" in c.value for c in app.caption)
    assert {m.value for m in app.metric} == expected != shipped
