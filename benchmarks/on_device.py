"""Screening on the device in headless Chromium (issue #39's targets): a visit to the server's first page,
then a new browser profile's first visit and its second ones (the libraries and model from Cache Storage;
median and slowest of several), each to ready and to a first result; time per X-ray in a batch; the
server's resident memory across the batch. Real X-rays where ../shared/data has them, else synthetic ones.

    python3 -m benchmarks.on_device [--files 100] [--second-visits 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server

VISIT_GAP_S = 2.0


def _files(count: int) -> tuple[str, list[tuple[str, bytes]]]:
    from core.analysis import data
    from core.analysis.synthetic import chest_xray, encode

    folder = data.default_data_dir()
    if folder and data.available_splits(folder):
        paths = sorted((data.resolve_root(folder) / "train").glob("*/*.jpeg"))[::13][:count]
        return "real X-rays (train split, 224 px JPEG)", [(p.name, p.read_bytes()) for p in paths]
    return "synthetic X-rays (256 px PNG)", [(f"chest{i}.png", encode(chest_xray(i, i % 2 == 1, 256), "PNG"))
                                             for i in range(count)]


# Both waits poll on every animation frame in the page: playwright's `expect` retries after 100, 250
# and 500 ms, which had added up to a quarter of a second to a figure.
def _ready(page, timeout_s: float = 180) -> dict:
    status = page.get_by_test_id("on-device-status")
    status.wait_for(state="attached", timeout=timeout_s * 1000)
    page.locator('[data-testid="on-device-status"][data-phase="ready"], '
                 '[data-testid="on-device-status"][data-phase="off"]').wait_for(state="attached",
                                                                                timeout=timeout_s * 1000)
    return {"phase": status.get_attribute("data-phase"), "downloaded": status.get_attribute("data-downloaded"),
            "timings ms": {k: round(v) for k, v in json.loads(status.get_attribute("data-timings")).items()}}


def _first_result(page, files: list[tuple[str, bytes]]) -> float:
    """Seconds from choosing one X-ray to its result on the page."""
    from playwright.sync_api import expect

    chooser = page.get_by_test_id("on-device-input")
    expect(chooser).to_be_enabled(timeout=60_000)
    started = time.monotonic()
    chooser.set_input_files(files=[_payload(*files[0])])
    page.get_by_text("of 1 flagged").first.wait_for(state="visible", timeout=60_000)
    return time.monotonic() - started


def _payload(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "image/png" if name.endswith(".png") else "image/jpeg", "buffer": data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100, help="X-rays screened in one batch")
    parser.add_argument("--second-visits", type=int, default=5, help="second visits timed (median and slowest)")
    args = parser.parse_args()
    if args.second_visits < 1:
        parser.error("--second-visits must be at least 1")
    from playwright.sync_api import expect, sync_playwright

    kind, files = _files(args.files)
    figures: dict = {"files": f"{len(files)} {kind}"}
    with streamlit_server() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # The server's own first page (imports, model sessions) is timed apart: a visitor's first visit
        # usually finds the server running. Then a new browser profile (nothing in its Cache Storage)
        # visits twice.
        visitor = browser.new_context(viewport={"width": 1400, "height": 1000})
        visits = [("server's first page", browser.new_context()), ("first", visitor)]
        visits += [("second", visitor)] * args.second_visits
        second: dict[str, list[float]] = {"to ready s": [], "to a first result s": []}
        for number, (visit, context) in enumerate(visits):
            page = context.new_page()
            started = time.monotonic()
            page.goto(f"{server.url}/screen")
            report = _ready(page)
            ready_s = time.monotonic() - started
            result_s = ready_s + _first_result(page, files)
            if visit == "second":  # the same profile again: every visit after its first is a second visit
                second["to ready s"].append(ready_s)
                second["to a first result s"].append(result_s)
            else:
                figures[f"{visit}: to ready s"] = round(ready_s, 2)
                figures[f"{visit}: to a first result s"] = round(result_s, 2)
            figures[f"{visit}: component"] = report  # a second visit's: the last one's
            if number < len(visits) - 1:
                page.close()
                # A visit comes some time after the last page closed, not in the same instant: the server
                # has ended that session's last run (seen to slow a visit started at once by about 0.2 s).
                time.sleep(VISIT_GAP_S)
        for name, seconds in second.items():
            figures[f"second ({len(seconds)} visits): {name}, median and slowest"] = [
                round(statistics.median(seconds), 2), round(max(seconds), 2)]
        page.reload()  # a clean page for the batch
        _ready(page)
        before = server.resident_mb()
        chooser = page.get_by_test_id("on-device-input")
        expect(chooser).to_be_enabled(timeout=60_000)
        started = time.monotonic()
        chooser.set_input_files(files=[_payload(n, b) for n, b in files])
        expect(page.get_by_text(f"of {len(files)} flagged").first).to_be_visible(timeout=600_000)
        seconds = time.monotonic() - started
        page.wait_for_timeout(2000)  # the cards' pictures, drawn after the summary
        figures["batch s"] = round(seconds, 2)
        figures["per X-ray ms (batch to summary, cards included)"] = round(1000 * seconds / len(files))
        figures["server resident MB before, after"] = [round(before, 1), round(server.resident_mb(), 1)]
        browser.close()
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
