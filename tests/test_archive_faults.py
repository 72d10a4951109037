"""Archive jobs under the faults an operator makes: another folder or profile resumed into DIR, two
jobs at once, a run without its record, real SIGKILLs of local and Ray jobs at random points, and
mistakes that must end in one line. Every case ends with each file screened exactly once at one
threshold, or with a refusal before any work."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, encode, xray_like

from core.analysis.synthetic import make_dicom
from core.serving import archive
from core.serving.archive import cluster
from core.serving.archive.job import refusal_counts
from core.serving.archive.listing import load_key
from core.serving.errors import JobError
from core.serving.predictor import Predictor

GOOD = 16


def make_source(root: Path, seed: int = 0, count: int = GOOD, size: int = 256) -> Path:
    """count X-ray-like JPEGs in two folders, and two files that cannot be screened."""
    for folder in ("ward_a", "ward_b"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        folder = "ward_a" if i % 2 else "ward_b"
        (root / folder / f"x{i:03d}.jpeg").write_bytes(encode(xray_like(seed + i, (seed + i) % 3 == 0, size)))
    (root / "ward_b/empty.png").write_bytes(b"")
    (root / "ward_b/cut.jpeg").write_bytes(encode(xray_like(seed, True, size))[:300])
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("src"))


def core(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})


def rows_by_path(out: Path) -> dict[str, dict]:
    """The folder's rows by path, asserting that no path has two."""
    table = archive.read_results(out)
    counts = Counter(table.column("path").to_pylist())
    assert not [p for p, n in counts.items() if n > 1], "duplicated rows"
    return {row["path"]: row for row in table.to_pylist()}


def assert_same_rows(got: dict[str, dict], expected: dict[str, dict]) -> None:
    """Row for row as an uninterrupted run (probabilities to float precision: batches differ)."""
    assert sorted(got) == sorted(expected)
    for path, row in got.items():
        want = expected[path]
        assert {k: v for k, v in row.items() if k != "probability"} == \
               {k: v for k, v in want.items() if k != "probability"}, path
        assert (row["probability"] is None) == (want["probability"] is None), path
        if want["probability"] is not None:
            assert abs(row["probability"] - want["probability"]) <= 1e-5, path


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> dict[str, dict]:
    """The rows of one uninterrupted local run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    archive.screen_archive(source, out, archive.JobSpec())
    rows = rows_by_path(out)
    assert len(rows) == GOOD + 2
    return rows


# --- A resume that is not the same job is refused before any work ------------------------------

def test_another_folder_with_the_same_names_is_refused_on_resume(tmp_path):
    first, second = make_source(tmp_path / "a", seed=0), make_source(tmp_path / "b", seed=100)
    out = tmp_path / "out"
    assert core("screen", str(first), "--out", str(out)).returncode == 0
    before = rows_by_path(out)
    refused = core("screen", str(second), "--out", str(out), "--resume")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"source folder {first.resolve()} (now {second.resolve()})" in refused.stderr
    assert rows_by_path(out) == before and len(archive.runs(out)) == 1  # no run was started
    # The same folder under another spelling is the same job: nothing screened twice.
    again = core("screen", str(tmp_path / "a" / ".." / "a"), "--out", str(out), "--resume")
    assert again.returncode == 0 and "0 files in" in again.stderr and rows_by_path(out) == before


def test_a_site_profile_recalibrated_under_the_same_name_is_refused_on_resume(source, tmp_path):
    from test_site import TARGET, shifted_site, stub_predictor

    from core.analysis import site_calibration
    from core.serving.site import seal

    card = Predictor.load().card
    profile = tmp_path / "clinic.json"

    def calibrate(seed: int) -> float:
        content, _ = site_calibration.calibrate(stub_predictor(), shifted_site(np.random.default_rng(seed), 300),
                                                TARGET)
        profile.write_text(json.dumps(seal({**content, "model": card.name, "model_sha256": card.sha256})))
        return content["operating_points"]["screening"]

    first = calibrate(1)
    out = tmp_path / "out"
    done = core("screen", str(source), "--out", str(out), "--site", str(profile))
    assert done.returncode == 0, done.stderr[-2000:]
    assert calibrate(2) != first
    refused = core("screen", str(source), "--out", str(out), "--site", str(profile), "--resume")
    assert refused.returncode != 0 and "site profile's content (sha256)" in refused.stderr
    assert "Traceback" not in refused.stderr
    thresholds = {row["threshold"] for row in rows_by_path(out).values()}
    assert thresholds == {first}


def test_a_manifest_file_listed_twice_however_spelt_is_one_row_and_another_manifest_is_another_job(
        source, tmp_path):
    manifest = tmp_path / "files.txt"
    manifest.write_text(f"ward_a/x001.jpeg\nward_a/../ward_a/x001.jpeg\n{source.resolve()}/ward_a/x001.jpeg\n")
    out = tmp_path / "out"
    archive.screen_archive(source, out, archive.JobSpec(), manifest=manifest)
    assert list(rows_by_path(out)) == ["ward_a/x001.jpeg"]
    manifest.write_text("ward_a/x003.jpeg\n")
    with pytest.raises(JobError, match=r"manifest \(sha256\)"):
        archive.screen_archive(source, out, archive.JobSpec(), manifest=manifest, resume=True)


# --- One job at a time; runs that left no record --------------------------------------------------

SLOW_JOB = """
import sys, time
from pathlib import Path
from core.analysis.synthetic import make_dicom
from core.serving import archive
archive.local.ROWS_PER_PART = 4
slow = lambda total, before: (lambda n: time.sleep(0.3))
try:
    archive.screen_archive(Path(sys.argv[1]), Path(sys.argv[2]), archive.JobSpec(), batch_size=2, progress=slow,
                           resume=True)
except archive.JobError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""


def slow_job(src: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_JOB, str(src), str(out)], cwd=ROOT, text=True,
                            stderr=subprocess.PIPE)


def test_two_jobs_started_at_once_on_one_folder_screen_each_file_once(source, reference, tmp_path):
    out = tmp_path / "out"
    jobs = [slow_job(source, out), slow_job(source, out)]
    results = [(job.wait(timeout=300), job.stderr.read()) for job in jobs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], results
    refused = next(err for code, err in results if code == 3)
    assert "is being screened by another job (pid " in refused
    assert_same_rows(rows_by_path(out), reference)
    # While one runs, the command line refuses a second, naming it.
    out2 = tmp_path / "out2"
    running = slow_job(source, out2)
    deadline = time.monotonic() + 120
    while not archive.runs(out2) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = core("screen", str(source), "--out", str(out2), "--resume")
    running.wait(timeout=300)
    assert second.returncode != 0 and f"pid {running.pid} " in second.stderr and "Traceback" not in second.stderr


def test_a_run_folder_without_its_record_or_with_a_corrupt_one_is_set_aside_not_a_refusal(
        source, reference, tmp_path):
    out = tmp_path / "out"
    archive.screen_archive(source, out, archive.JobSpec())
    (run,) = archive.runs(out)
    (run / archive.store.RUN_INFO).write_text('{"engine": "loc')  # a record cut short
    (out / "run-20000101T000000-abcdef").mkdir()  # a job killed before it wrote its record
    resumed = core("screen", str(source), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "set aside 2 run folder(s) without a job record" in resumed.stderr
    assert f"{GOOD + 2} files in" in resumed.stderr  # screened again, once
    assert_same_rows(rows_by_path(out), reference)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(archive.SET_ASIDE)) == [
        archive.SET_ASIDE + "run-20000101T000000-abcdef", archive.SET_ASIDE + run.name]


# --- Real kills ----------------------------------------------------------------------------------

def kill_at(command: list[str], out: Path, delay: float, env: dict | None = None, after_part: bool = False) -> None:
    """Start a job in its own process group and SIGKILL its process delay seconds after it started
    a new run in out (after_part: after that run's first part appeared; a negative delay: that long
    after it started, in its start-up), or let it end first; then whatever it started (a local Ray
    instance's agents): as an operator's kill -9."""
    before = set(archive.runs(out))
    job = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + (-delay if delay < 0 else 300)

    def waiting() -> bool:
        new = set(archive.runs(out)) - before
        return not new or (after_part and not any(run.glob("part-*") for run in new))

    while delay >= 0 and waiting() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        job.wait(timeout=max(0.0, deadline - time.monotonic()) if delay < 0 else delay)
    except subprocess.TimeoutExpired:
        job.send_signal(signal.SIGKILL)
        job.wait()
    time.sleep(0.5)
    with_group = subprocess.run(["pkill", "-9", "-g", str(job.pid)], check=False)
    assert with_group.returncode in (0, 1)


def test_a_local_job_killed_at_random_points_then_resumed_screens_every_file_once(source, reference, tmp_path):
    out = tmp_path / "out"
    # One kill in the start-up (before or while the run folder is made), three while it screens.
    rng = random.Random(37)
    points = [-rng.uniform(0.5, 3.0)] + [rng.uniform(0.0, 2.5) for _ in range(3)]
    for delay in points:
        kill_at([sys.executable, "-c", SLOW_JOB, str(source), str(out)], out, delay)
        rows_by_path(out)  # whatever a kill left, every part that counts reads whole, each path once
    killed = [run for run in archive.runs(out) if not (run / archive.COMPLETE).exists()]
    assert killed, "no job was killed midway: the kill points are too late"
    resumed = core("screen", str(source), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_rows(rows_by_path(out), reference)


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory) -> dict:
    pytest.importorskip("ray", reason="Ray is an extra: pip install -r requirements-scale.txt")
    return {"HOME": str(tmp_path_factory.mktemp("home")), "RAY_USAGE_STATS_ENABLED": "0"}


def test_a_ray_job_killed_at_random_points_then_resumed_screens_every_file_once(tmp_path, ray_env):
    src = make_source(tmp_path / "src", seed=7, count=192)  # 2 s of screening: the kills below land inside it
    expected_out = tmp_path / "reference"
    archive.screen_archive(src, expected_out, archive.JobSpec())
    expected = rows_by_path(expected_out)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "core", "screen", str(src), "--out", str(out), "--engine", "ray", "--workers",
               "1", "--batch-size", "2", "--resume"]
    rng = random.Random(38)
    # In the start-up, before the run begins: starting the local Ray instance takes 4-5 s on 2 cores, and
    # a job screens 192 files in about 2 s more, so a kill at 5.8 s let a whole job end first (and every
    # later one found nothing left to screen). Then twice while it screens, soon after a run's first part
    # (of 24: a kill timed from the run's start could come after the job's end).
    kill_at(command, out, -rng.uniform(0.5, 2.5), ray_env)
    for _ in range(2):
        kill_at(command, out, rng.uniform(0.0, 0.3), ray_env, after_part=True)
    killed = [run for run in archive.runs(out) if not (run / archive.COMPLETE).exists()]
    assert killed, ("no Ray job was killed midway: the kill points are too late", sorted(p.name for p in out.iterdir()))
    spilled = out / archive.store.SCRATCH / "spill" / "left-by-a-crash"  # what a killed job's instance spilled
    spilled.parent.mkdir(parents=True, exist_ok=True)
    spilled.write_bytes(b"spilled rows")
    resumed = subprocess.run(command, cwd=ROOT, env={**os.environ, **ray_env}, capture_output=True, text=True,
                             timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (out / archive.store.SCRATCH).exists()  # the next run removes it, as it removes its own
    assert_same_rows(rows_by_path(out), expected)


# --- Operator mistakes: one line, a non-zero exit, never a traceback --------------------------

def test_operator_mistakes_end_in_one_line_without_a_traceback(source, tmp_path):
    fake_ray = tmp_path / "no_ray"
    (fake_ray / "ray").mkdir(parents=True)
    (fake_ray / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    out = str(tmp_path / "out")
    cases = {
        "no such manifest": (["screen", str(source), "--out", out, "--manifest", str(tmp_path / "missing.txt")],
                             {}, "cannot read the manifest"),
        "batch size 0": (["screen", str(source), "--out", out, "--batch-size", "0"], {}, "not a count of at least 1"),
        "no Ray": (["screen", str(source), "--out", out, "--engine", "ray"], {"PYTHONPATH": str(fake_ray)},
                   "needs Ray: pip install -r requirements-scale.txt"),
        "not a folder": (["screen", str(source / "ward_a/x001.jpeg"), "--out", out], {}, "is not a folder"),
        "bad address": (["screen", str(source), "--out", out, "--engine", "ray", "--address", "ray://"], {},
                        "expected HOST:PORT"),
        "pseudonym without key": (["screen", str(source), "--out", out, "--path-column", "pseudonym"], {},
                                  "needs --key-file"),
        "bad ensemble member": (["ensemble", "--member", "no_such_model", "--member", "cnn_small", "--name", "e"],
                                {}, "no_such_model"),
        "no site profile": (["screen", str(source), "--site", str(tmp_path / "none.json")], {}, "no site profile"),
    }
    for name, (args, env, expected) in cases.items():
        done = core(*args, env=env)
        assert done.returncode != 0 and "Traceback" not in done.stderr, (name, done.stderr[-2000:])
        assert expected in done.stderr, (name, done.stderr[-2000:])
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (name, lines)
    assert not (tmp_path / "out").exists() or not archive.runs(tmp_path / "out")


def test_files_that_fail_midway_become_rows_with_their_reason(tmp_path):
    screener = archive.ArchiveScreener(archive.JobSpec())
    grown = tmp_path / "grown.jpeg"
    with open(grown, "wb") as handle:
        handle.truncate(60 * 2**20)
    pipe = tmp_path / "pipe.jpeg"
    os.mkfifo(pipe)  # read as a file, it would wait for a writer for ever
    rows = screener.screen([(str(tmp_path / "deleted.jpeg"), "deleted.jpeg"), (str(grown), "grown.jpeg"),
                            (str(tmp_path), "a folder"), (str(pipe), "pipe.jpeg")])
    errors = dict(zip(rows["path"], rows["error"]))
    assert errors == {"deleted.jpeg": "no such file", "grown.jpeg": "the file is larger than the 50 MB limit",
                      "a folder": "no such file", "pipe.jpeg": "not a regular file"}


# --- Ray's workers, addresses and the summary --------------------------------------------------

WORKER_WITH_ANOTHER_CARD = """
import dataclasses, sys
from pathlib import Path
from core.serving import archive
from core.serving.archive import cluster
from core.serving.predictor import Predictor
other = dataclasses.replace(archive.JobSpec().pinned(Predictor.load()), scoring="0" * 64)
todo = [(s, s.path.name) for s in archive.list_sources(Path(sys.argv[1])).sources[:2]]
run = Path(sys.argv[2])
run.mkdir()
with cluster.ray_cluster(None, 1, run.parent) as ray:
    try:
        cluster.run_ray(ray, archive.ArchiveScreener(other, predictor=Predictor.load()), todo, run, "parquet", 2, 1)
    except archive.JobError as exc:
        print("refused:", exc)
"""


def test_a_worker_that_finds_another_model_file_refuses_to_screen(source, tmp_path, ray_env):
    import dataclasses

    pinned = archive.JobSpec().pinned(Predictor.load())
    assert pinned.model and pinned.model_sha256 and pinned.onnx_sha256 and pinned.scoring
    pinned.predictor()  # the same file and card: accepted
    with pytest.raises(JobError, match="another file or card"):
        dataclasses.replace(pinned, scoring="0" * 64).predictor()
    # Through Ray (in a process of its own: Ray keeps settings in the environment of the process that
    # starts it): the actor's refusal reaches the operator as its own words, not Ray's.
    done = subprocess.run([sys.executable, "-c", WORKER_WITH_ANOTHER_CARD, str(source), str(tmp_path / "run")],
                          cwd=ROOT, env={**os.environ, **ray_env}, capture_output=True, text=True, timeout=300,
                          check=False)
    assert "refused: this worker's" in done.stdout and "another file or card" in done.stdout, done.stderr[-2000:]


def test_cluster_addresses_are_read_as_ray_writes_them():
    assert cluster.endpoint("10.1.2.3:6379") == ("10.1.2.3", 6379)
    assert cluster.endpoint("ray://head.example:10002") == ("head.example", 10002)
    assert cluster.endpoint("ray://head.example") == ("head.example", cluster.CLIENT_PORT)
    assert cluster.endpoint("[::1]:6379") == ("::1", 6379)
    assert cluster.endpoint("auto") is None
    for bad in ("head", "http://head:1", "ray://", "head:port"):
        with pytest.raises(JobError):
            cluster.endpoint(bad)


def test_refusals_with_numbers_in_them_count_as_one_reason():
    reasons = ["glare covers 7% of the film: tilt", "glare covers 12% of the film: tilt", "the file is empty",
               "the file is empty", "not a chest X-ray: the image is too elongated (300x100)"]
    assert refusal_counts(reasons) == {"glare covers N% of the film: tilt": 2, "the file is empty": 2,
                                       "not a chest X-ray: the image is too elongated (300x100)": 1}


# --- Paths without identifiers ------------------------------------------------------------------

def test_pseudonyms_carry_no_names_resume_with_their_key_and_join_back(source, tmp_path):
    key, out = tmp_path / "job.key", tmp_path / "out"
    done = core("screen", str(source), "--out", str(out), "--path-column", "pseudonym", "--key-file", str(key))
    assert done.returncode == 0, done.stderr[-2000:]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    rows = rows_by_path(out)
    assert len(rows) == GOOD + 2 and all(len(p) == 32 and "ward" not in p and "/" not in p for p in rows)
    for part in (p for p in out.rglob("*") if p.is_file()):
        assert b"ward_" not in part.read_bytes() and b"x001" not in part.read_bytes()
    again = core("screen", str(source), "--out", str(out), "--path-column", "pseudonym", "--key-file", str(key),
                 "--resume")
    assert again.returncode == 0 and "0 files in" in again.stderr
    mistyped = core("screen", str(source), "--out", str(out), "--path-column", "pseudonym", "--key-file",
                    str(tmp_path / "other.key"), "--resume")
    assert mistyped.returncode != 0 and "no pseudonym key at" in mistyped.stderr  # a resume makes no new key
    assert not (tmp_path / "other.key").exists()
    load_key(tmp_path / "other.key", create=True)
    other_key = core("screen", str(source), "--out", str(out), "--path-column", "pseudonym", "--key-file",
                     str(tmp_path / "other.key"), "--resume")
    assert other_key.returncode != 0 and "pseudonym key (fingerprint)" in other_key.stderr
    joined = core("pseudonyms", str(source), "--key-file", str(key))
    lines = joined.stdout.splitlines()
    mapping = dict(line.split(",") for line in lines[1:])
    assert lines[0] == "pseudonym,path" and set(mapping) == set(rows)
    assert rows[next(p for p, path in mapping.items() if path == "ward_b/empty.png")]["error"] == "the file is empty"


def test_as_given_paths_keep_the_operators_spelling(source, tmp_path):
    out = tmp_path / "out"
    archive.screen_archive(source, out, archive.JobSpec(), path_column="as-given")
    files = [str(p) for p in source.rglob("*") if p.is_file()]
    assert len(files) == GOOD + 2 and sorted(rows_by_path(out)) == sorted(files)
    # SRC spelt another way would key every file anew: refused, not screened twice.
    with pytest.raises(JobError, match="SRC as typed"):
        archive.screen_archive(source / ".." / source.name, out, archive.JobSpec(), path_column="as-given",
                               resume=True)


def test_a_model_card_recalibrated_since_the_job_began_is_another_job(source, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models, ignore=shutil.ignore_patterns("*.keras"))
    out = tmp_path / "out"
    done = core("screen", str(source), "--out", str(out), env={"CXR_MODELS_DIR": str(models)})
    assert done.returncode == 0, done.stderr[-2000:]
    card_file = models / f"{Predictor.load().name}.json"
    card = json.loads(card_file.read_text())
    card["operating_points"]["screening"] = card["operating_points"]["screening"] / 2  # as `core calibrate` would
    card_file.write_text(json.dumps(card))
    refused = core("screen", str(source), "--out", str(out), "--resume", env={"CXR_MODELS_DIR": str(models)})
    assert refused.returncode != 0 and "model card's calibration, zooms and thresholds" in refused.stderr
    assert "threshold " in refused.stderr and "Traceback" not in refused.stderr


def test_what_a_folder_holds_besides_images_is_counted_and_a_dicom_without_suffix_screened(tmp_path):
    src = make_source(tmp_path / "src", count=4)
    (src / "ward_a" / "notes.txt").write_text("not an image")
    (src / "ward_a" / "IM000001").write_bytes(make_dicom(xray_like(3, True, 256).astype(np.uint16) * 16))
    (src / "ward_a" / "README").write_text("no suffix, no DICOM")
    summary = archive.screen_archive(src, tmp_path / "out", archive.JobSpec())
    rows = rows_by_path(tmp_path / "out")
    assert rows["ward_a/IM000001"]["input_kind"] == "dicom" and rows["ward_a/IM000001"]["error"] is None
    assert summary.not_images == 2 and "2 files under SRC are not JPEG, PNG or DICOM" in "\n".join(summary.lines())
    assert len(rows) == 4 + 2 + 1


def test_a_run_whose_part_was_lost_is_screened_again_and_strays_are_hidden_from_readers(source, reference, tmp_path):
    import pyarrow.dataset as ds

    out = tmp_path / "out"
    archive.screen_archive(source, out, archive.JobSpec())
    (run,) = archive.runs(out)
    (part,) = run.glob("part-*.parquet")
    shutil.copy(part, run / "part-99999.parquet")  # a straggling writer's part, never listed
    again = archive.screen_archive(source, out, archive.JobSpec(), resume=True)
    assert again.files == 0 and again.run == "" and archive.runs(out) == [run]  # nothing to do: no empty run
    assert ds.dataset(out, format="parquet").count_rows() == GOOD + 2  # pandas or pyarrow see each row once
    part.write_bytes(part.read_bytes()[:100])  # a listed part damaged on disk
    resumed = archive.screen_archive(source, out, archive.JobSpec(), resume=True)
    assert resumed.set_aside == [run.name] and resumed.files == GOOD + 2
    assert_same_rows(rows_by_path(out), reference)
