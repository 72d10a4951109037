"""Site calibration from screening results, timed: python -m benchmarks.site_results (needs Chromium).

1. The Site calibration page in headless Chromium: a results CSV of ROWS rows with diagnoses (synthetic
   X-rays screened by the default model) uploaded, Calibrate pressed, until the profile can be
   downloaded.
2. `core screen --rethreshold` on an archive job of COUNT rows (hard links to a few synthetic X-rays,
   so the folder costs no disk): the whole command, start-up included, and the rescoring inside it,
   with whether ONNX Runtime was loaded by it (it must not be: no model runs).
"""
import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from core.analysis import site_calibration
from core.analysis.synthetic import chest_jpeg
from core.serving import archive, screening
from core.serving.predictor import Predictor

ROOT = Path(__file__).resolve().parent.parent
DISTINCT = 50  # distinct synthetic X-rays behind the links
TIMED = """
import sys, time
from pathlib import Path
from core.serving.archive.rethreshold import rethreshold
from core.serving.site import SiteProfile
data = Path(sys.argv[2]).read_bytes()
started = time.perf_counter()
summary = rethreshold(Path(sys.argv[1]), Path(sys.argv[3]), SiteProfile.from_bytes(data, "site"), data, "screening")
print(summary.files, time.perf_counter() - started, "onnxruntime" in sys.modules)
"""


def results_csv(rows: int) -> bytes:
    """The Screen page's CSV for rows distinct synthetic X-rays, one in three with pneumonia, diagnoses filled in."""
    predictor = Predictor.load()
    screened = []
    for i in range(rows):
        row = screening.screen_bytes(predictor, f"IM-{i:04d}-0001.jpeg", chest_jpeg(i, i % 3 == 0, 256)).to_dict()
        screened.append({**row, "diagnosis": "PNEUMONIA" if i % 3 == 0 else "NORMAL"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=screening.ROW_FIELDS)
    writer.writeheader()
    writer.writerows(screened)
    return buffer.getvalue().encode()


def page_seconds(data: bytes) -> float:
    """From the upload of a results file to the profile offered for download, in the browser."""
    with streamlit_server() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server.url}/site")
        expect(page.get_by_text("Screening results (CSV or JSON)")).to_be_visible(timeout=120_000)
        started = time.perf_counter()
        page.locator('input[type="file"]').first.set_input_files(
            files=[{"name": "screening_results.csv", "mimeType": "text/csv", "buffer": data}])
        page.get_by_role("button", name="Calibrate").click(timeout=120_000)
        expect(page.get_by_text("Download the site profile")).to_be_visible(timeout=300_000)
        seconds = time.perf_counter() - started
        browser.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400, help="rows of the results file the page calibrates on")
    parser.add_argument("--count", type=int, default=10_000, help="archive rows rethresholded")
    args = parser.parse_args()
    seconds = page_seconds(results_csv(args.rows))
    print(f"Site calibration page, {args.rows} result rows with diagnoses: {seconds:.1f} s from upload to the "
          "profile offered for download")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        originals = []
        for i in range(DISTINCT):
            originals.append(scratch / f"original{i}.jpeg")
            originals[-1].write_bytes(chest_jpeg(i, i % 3 == 0, 256))
        src = scratch / "src"
        src.mkdir()
        for i in range(args.count):
            os.link(originals[i % DISTINCT], src / f"x{i:05d}.jpeg")
        started = time.perf_counter()
        archive.screen_archive(src, scratch / "out", archive.JobSpec())
        screened = time.perf_counter() - started
        predictor = Predictor.load()
        rows = archive.read_results(scratch / "out").to_pylist()
        for row in rows:
            row["diagnosis"] = "PNEUMONIA" if int(row["path"][1:6]) % DISTINCT % 3 == 0 else "NORMAL"
        content, _ = site_calibration.calibrate(predictor, site_calibration.from_results(predictor, rows))
        (scratch / "site.json").write_text(json.dumps(content))

        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "core", "screen", "--rethreshold", str(scratch / "out"),
                               "--site", str(scratch / "site.json"), "--out", str(scratch / "new")],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        command = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        timed = subprocess.run([sys.executable, "-c", TIMED, str(scratch / "out"), str(scratch / "site.json"),
                                str(scratch / "timed")], cwd=ROOT, capture_output=True, text=True, check=True)
        files, seconds, onnx_loaded = timed.stdout.split()
    print(f"{args.count} archive rows (screened in {screened:.0f} s), {os.cpu_count()} cores")
    print(f"core screen --rethreshold, whole command with start-up: {command:.2f} s")
    print(f"rescoring and writing {files} rows: {float(seconds):.2f} s; ONNX Runtime loaded: {onnx_loaded}")


if __name__ == "__main__":
    main()
