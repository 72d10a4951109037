"""Archive screening: one row per file as Predictor.screen gives it, bad files as rows with their
reasons, resumable exactly once after a kill, the same rows on Ray, and job faults before any work."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, encode, xray_like

from core.analysis.synthetic import make_dicom
from core.serving import archive
from core.serving.predictor import Predictor
from core.serving.screening import expand_paths
from core.serving.settings import MAX_FILE_BYTES

PATIENT = "Doe^Jane"
# file -> what its refusal must say
BAD_FILES = {"ward_b/empty.png": "empty", "ward_b/truncated.jpeg": "truncated or corrupt",
             "ward_b/notes.dcm": "not a supported image", "ward_b/ct.dcm": "modality CT",
             "ward_b/cine.dcm": "multi-frame", "ward_b/holiday.png": "in colour",
             "ward_b/huge.jpeg": "larger than the 50 MB limit"}
GOOD_COUNT = 25  # 24 JPEGs and one DICOM


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    for folder in ("ward_a", "ward_b/2019"):
        (root / folder).mkdir(parents=True)
    for i in range(24):
        folder = "ward_a" if i % 2 else "ward_b/2019"
        (root / folder / f"chest{i:02d}.jpeg").write_bytes(encode(xray_like(i, i % 3 == 0, 256)))
    stored = xray_like(30, True, 256).astype(np.uint16) * 16
    (root / "ward_a/scan.dcm").write_bytes(make_dicom(stored, patient=PATIENT))
    bad = {"empty.png": b"", "truncated.jpeg": encode(xray_like(1, True, 256))[:400], "notes.dcm": b"notes " * 40,
           "ct.dcm": make_dicom(stored, modality="CT", patient=PATIENT),
           "cine.dcm": make_dicom(stored, frames=3, patient=PATIENT),
           "holiday.png": cv2.imencode(".png", cv2.resize(np.random.default_rng(0).integers(0, 255, (5, 5, 3), np.uint8),
                                                          (200, 200), interpolation=cv2.INTER_NEAREST))[1]}
    for name, data in bad.items():
        (root / "ward_b" / name).write_bytes(bytes(data))
    with open(root / "ward_b/huge.jpeg", "wb") as handle:  # sparse: over the limit, no disk used
        handle.truncate(MAX_FILE_BYTES + 1)
    return root


def keys(source: Path) -> list[str]:
    return sorted(p.relative_to(source).as_posix() for p in expand_paths([source]))


def check_rows(table, source: Path) -> None:
    """Every file once, screened as Predictor.screen screens it, or refused with its reason."""
    rows = {row["path"]: row for row in table.to_pylist()}
    assert table.num_rows == len(rows) == len(keys(source)) == GOOD_COUNT + len(BAD_FILES)
    assert sorted(rows) == keys(source)
    assert tuple(table.schema.names) == archive.COLUMNS
    predictor = Predictor.load()
    for key, row in rows.items():
        if key in BAD_FILES:
            assert row["probability"] is None and row["label"] is None and BAD_FILES[key] in row["error"], row
            continue
        expected = predictor.screen((source / key).read_bytes())
        assert row["error"] is None and abs(row["probability"] - expected.probability) <= 1e-6, (key, row)
        assert (row["label"], row["threshold"], row["model_sha256"]) == (
            expected.label, expected.threshold, expected.model_sha256)
        assert (row["warnings"] or "") == "; ".join(expected.warnings)


def test_the_local_engine_gives_each_file_one_row_as_predictor_screen_does(source, tmp_path):
    out = tmp_path / "out"
    summary = archive.screen_archive(source, out, archive.JobSpec(), batch_size=4)
    table = archive.read_results(out)
    check_rows(table, source)
    assert (summary.files, summary.screened, sum(summary.refused.values())) == (
        GOOD_COUNT + len(BAD_FILES), GOOD_COUNT, len(BAD_FILES))
    assert summary.flagged == table.column("label").to_pylist().count("PNEUMONIA")
    # Never a patient tag, never pixels: only the ten columns, in every byte written.
    for part in (p for p in out.rglob("*") if p.is_file()):
        assert PATIENT.encode() not in part.read_bytes()


def test_csv_output_holds_the_same_rows(source, tmp_path):
    archive.screen_archive(source, tmp_path / "parquet", archive.JobSpec())
    archive.screen_archive(source, tmp_path / "csv", archive.JobSpec(), fmt="csv")
    assert list((tmp_path / "csv").glob("run-*/part-*.csv"))
    as_parquet, as_csv = (archive.read_results(tmp_path / n).sort_by("path").to_pylist() for n in ("parquet", "csv"))
    assert as_csv == as_parquet


KILLABLE_JOB = """
import sys, time
from pathlib import Path
from core.serving import archive
archive.local.ROWS_PER_PART = 4
slow = lambda total, before: (lambda n: time.sleep(0.4))
archive.screen_archive(Path(sys.argv[1]), Path(sys.argv[2]), archive.JobSpec(), batch_size=2, progress=slow)
"""


def _core(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})


def test_a_job_killed_midway_resumes_without_losing_or_repeating_a_file(source, tmp_path):
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-c", KILLABLE_JOB, str(source), str(out)], cwd=ROOT)
    deadline = time.monotonic() + 300
    while len(list(out.glob("run-*/part-*.parquet"))) < 2 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    job.kill()
    job.wait()
    (killed,) = archive.runs(out)
    done_before = archive.read_results(out).num_rows
    assert not (killed / archive.COMPLETE).exists() and 0 < done_before < len(keys(source))
    refused = _core("screen", str(source), "--out", str(out))
    assert refused.returncode != 0 and "--resume" in refused.stderr
    resumed = _core("screen", str(source), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done_before} files were already screened" in resumed.stderr
    check_rows(archive.read_results(out), source)
    again = _core("screen", str(source), "--out", str(out), "--resume")
    assert again.returncode == 0 and "0 files in" in again.stderr
    assert archive.read_results(out).num_rows == len(keys(source))
    # Resuming is for the same job: rows at another threshold are never mixed in.
    other = _core("screen", str(source), "--out", str(out), "--resume", "--operating-point", "balanced")
    assert other.returncode != 0 and "operating point screening (now balanced)" in other.stderr
    assert archive.read_results(out).num_rows == len(keys(source))


def test_a_manifest_names_the_files_and_a_missing_one_gets_a_row(source, tmp_path):
    manifest = tmp_path / "files.txt"
    manifest.write_text(f"ward_a/chest01.jpeg\n\nward_b/empty.png\nward_a/gone.jpeg\n{source}/ward_a/chest01.jpeg\n")
    archive.screen_archive(source, tmp_path / "out", archive.JobSpec(), manifest=manifest)
    rows = {r["path"]: r for r in archive.read_results(tmp_path / "out").to_pylist()}
    assert sorted(rows) == ["ward_a/chest01.jpeg", "ward_a/gone.jpeg", "ward_b/empty.png"]
    assert rows["ward_a/gone.jpeg"]["error"] == "no such file" and rows["ward_a/chest01.jpeg"]["error"] is None


def test_faults_of_the_job_stop_it_before_any_work(source, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(archive.JobError, match="cannot write"):
        archive.screen_archive(source, blocker / "out", archive.JobSpec())
    tampered = tmp_path / "models"
    shutil.copytree(ROOT / "models", tampered, ignore=shutil.ignore_patterns("*.keras"))
    card = Predictor.load().card
    with open(tampered / card.onnx["file"], "ab") as handle:
        handle.write(b"\0")
    done = _core("screen", str(source), "--out", str(tmp_path / "out"), env={"CXR_MODELS_DIR": str(tampered)})
    assert done.returncode != 0 and "does not match its card" in done.stderr and not (tmp_path / "out").exists()
    with pytest.raises(archive.JobError, match="unknown operating point"):
        archive.screen_archive(source, tmp_path / "out", archive.JobSpec(operating_point="lenient"))


# --- Ray ------------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory) -> dict:
    """A writable temporary HOME (Ray writes an auth token there), usage statistics off."""
    pytest.importorskip("ray", reason="Ray is an extra: pip install -r requirements-scale.txt")
    return {"HOME": str(tmp_path_factory.mktemp("home")), "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_head(ray_env):
    """A local Ray cluster as `ray start --head` makes one: 2 CPUs, a small object store, loopback only."""
    port = _free_port()
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    started = subprocess.run([*ray, "start", "--head", "--port", str(port), "--num-cpus", "2",
                              "--object-store-memory", str(100 * 2**20), "--node-ip-address", "127.0.0.1",
                              "--include-dashboard", "false", "--disable-usage-stats"],
                             capture_output=True, text=True, env={**os.environ, **ray_env}, timeout=180, check=False)
    assert started.returncode == 0, started.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([*ray, "stop", "--force"], capture_output=True, env={**os.environ, **ray_env}, timeout=120,
                   check=False)


def test_the_ray_engine_on_a_cluster_writes_the_same_rows_and_resumes_after_an_interrupted_run(
        source, tmp_path, ray_env, ray_head):
    out = tmp_path / "out"
    # More workers asked for than the cluster's 2 CPUs: as many actors as it can place, not a wait for ever.
    done = _core("screen", str(source), "--out", str(out), "--engine", "ray", "--address", ray_head,
                 "--workers", "4", "--batch-size", "8", env=ray_env)
    assert done.returncode == 0, done.stderr[-3000:]
    check_rows(archive.read_results(out), source)
    # An interrupted Ray run, not marked complete, one of whose parts was since damaged (the driver
    # renames whole parts into place, so only the disk can do that): set aside whole, screened again.
    (run,) = archive.runs(out)
    (run / archive.COMPLETE).unlink()
    parts = sorted(run.glob("*.parquet"), key=lambda p: p.stat().st_size)
    cut = parts[-1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    resumed = _core("screen", str(source), "--out", str(out), "--resume", env=ray_env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / f"{archive.SET_ASIDE}{run.name}").exists() and "set aside 1 run folder" in resumed.stderr
    check_rows(archive.read_results(out), source)


def test_the_ray_engine_starts_and_stops_a_local_instance_of_its_own(source, tmp_path, ray_env):
    manifest = tmp_path / "files.txt"
    manifest.write_text("ward_a/chest01.jpeg\nward_b/ct.dcm\nward_a/gone.jpeg\n")
    done = _core("screen", str(source), "--out", str(tmp_path / "out"), "--engine", "ray", "--workers", "1",
                 "--manifest", str(manifest), "--format", "csv", env=ray_env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["path"]: r for r in archive.read_results(tmp_path / "out").to_pylist()}
    assert sorted(rows) == ["ward_a/chest01.jpeg", "ward_a/gone.jpeg", "ward_b/ct.dcm"]
    assert "modality CT" in rows["ward_b/ct.dcm"]["error"] and rows["ward_a/gone.jpeg"]["error"] == "no such file"
    assert "Traceback" not in done.stderr


def test_parts_renamed_into_place_count_whole_on_an_interrupted_run_and_in_place_csv_parts_do_not(tmp_path):
    from core.serving.archive import parts, store

    rows = [{name: [None] for name in archive.COLUMNS} | {"path": ["a.jpeg"]}]
    (tmp_path / "new").mkdir()
    renamed = store.new_run(tmp_path / "new", {"engine": "ray"})
    part = parts.write_part(parts.table(rows), renamed, 0, "csv")
    assert store.whole_parts(renamed) == ([part], [])
    older = tmp_path / "old" / "run-20261201T000000-abcdef"  # Ray Data's workers wrote in place
    older.mkdir(parents=True)
    (older / store.RUN_INFO).write_text('{"engine": "ray"}')
    shutil.copy(part, older / part.name)
    assert store.whole_parts(older) == ([], [older / part.name])


def test_what_a_ray_actor_imports_to_screen_loads_neither_pyarrow_nor_pandas():
    # About 40 MB of every worker's memory (the worker target is 300 MB): the actor sends rows as lists.
    probe = ("import sys; from core.serving.archive.screener import ArchiveScreener, JobSpec; "
             "rows = ArchiveScreener(JobSpec(), threads=1).screen([('missing.jpeg', 'missing.jpeg')]); "
             "print(rows['error'], 'pyarrow' in sys.modules, 'pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["['no", "such", "file']", "False", "False"]


def test_an_unreachable_cluster_stops_the_job_before_any_work(source, tmp_path, ray_env):
    done = _core("screen", str(source), "--out", str(tmp_path / "out"), "--engine", "ray",
                 "--address", f"127.0.0.1:{_free_port()}", env=ray_env, timeout=120)
    assert done.returncode != 0 and "cannot reach the Ray cluster" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_site_profile_sets_every_rows_points_and_one_for_another_file_stops_the_job(source, tmp_path):
    import json

    from test_site import TARGET, shifted_site, stub_predictor

    from core.analysis import site_calibration
    from core.serving.site import seal

    default = Predictor.load().card
    content, _ = site_calibration.calibrate(stub_predictor(), shifted_site(np.random.default_rng(6), 300), TARGET)

    def profile(sha256: str) -> bytes:
        return json.dumps(seal({**content, "model": default.name, "model_sha256": sha256})).encode()

    with pytest.raises(archive.JobError, match="another file"):
        archive.screen_archive(source, tmp_path / "refused", archive.JobSpec(site_profile=profile("b" * 64),
                                                                             site_name="clinic"))
    assert not (tmp_path / "refused").exists()
    spec = archive.JobSpec(site_profile=profile(default.sha256), site_name="clinic")
    archive.screen_archive(source, tmp_path / "out", spec)
    rows = [r for r in archive.read_results(tmp_path / "out").to_pylist() if r["error"] is None]
    threshold = content["operating_points"]["screening"]
    assert rows and all(r["site"] == "clinic" and r["threshold"] == threshold for r in rows)
    assert all(r["label"] == ("PNEUMONIA" if r["probability"] >= threshold else "NORMAL") for r in rows)
