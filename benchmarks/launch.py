"""Launch to first result, each page's first render and the server's memory after every page:
what a clinic's first user of the day waits for, and whether the public demo's box holds.

Usage: python -m benchmarks.launch
1. A bare Streamlit app with one uploader (benchmarks/apps/bare_uploader.py), then the dashboard,
   each started as README command 1 starts it: launch to the first result of one upload in a
   phone-sized headless Chromium, and their ratio.
2. On the dashboard, now warm (its first page served and, WARM_UP_DELAY_S later, the analyst
   pages' modules imported in the background), each page in turn in a new browser tab, with its defaults: time
   from navigation to the page settled (its marker shown and the script finished), against
   Home's, and the server's resident memory after it.
Targets (issue #33): memory after every page <= MEMORY_TARGET_MB (Streamlit Community Cloud's
smallest box has 690 MB), each page's first render <= RENDER_TARGET x Home's.

python -m benchmarks.launch --demo: the public demo instead (CXR_PUBLIC_DEMO=1, docs/deployment.md).
One visitor goes to every page and flips every toggle, the Explain page's "Load TensorFlow for
Grad-CAM" included, and asks for the data set's download (the other path that loads TensorFlow);
the server's resident memory after each step, its peak, and whether TensorFlow was ever loaded.
Target (issue #39): the peak < the demo's budget, DEMO_BUDGET_MB.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, ROOT, Server, streamlit_server
from core.analysis.synthetic import chest_jpeg, chest_xray, encode, make_dicom
from core.serving.memory import DEMO_BUDGET_MB, PUBLIC_DEMO_ENV
from ui.common import WARM_UP_DELAY_S

TIMEOUT_MS = 180_000
MEMORY_TARGET_MB = 350
RENDER_TARGET = 1.5
# page path ("" is Home) -> text that shows the page has run
PAGES = {"": "Model in use", "screen": "Screen chest X-rays", "explorer": "Class balance",
         "compare": "Threshold trade-off", "explain": "Choose an image to explain",
         "site": "Choose labelled local X-rays"}
RESULT = "Probability of pneumonia"
SOURCES_DOWNLOAD = "Download the public data set"  # the Dataset explorer's source that loads TensorFlow


def _settled(page) -> None:
    """Streamlit's running indicator gone: the page's script has finished."""
    page.wait_for_timeout(200)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=TIMEOUT_MS)


def first_result(browser, app=None, path: str = "") -> tuple[float, float]:
    """(seconds from launch to the server answering, to the first upload's result)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    with streamlit_server(**({"app": app} if app else {})) as server:
        page.goto(f"{server.url}/{path}")
        answered = time.monotonic()
        _upload(page, [{"name": "chest.jpeg", "mimeType": "image/jpeg", "buffer": chest_jpeg()}])
        expect(page.get_by_text(RESULT).first).to_be_visible(timeout=TIMEOUT_MS)
        shown = time.monotonic()
    page.close()
    return answered - server.started, shown - server.started


def page_visits(browser) -> list[dict]:
    """Each page's first render on a warm server, and the resident memory after it."""
    from playwright.sync_api import expect

    rows = []
    with streamlit_server() as server:
        warm_up = browser.new_page()
        warm_up.goto(server.url)  # the first request loads the default model for every session
        expect(warm_up.get_by_text(PAGES[""])).to_be_visible(timeout=TIMEOUT_MS)
        _settled(warm_up)
        warm_up.close()
        time.sleep(WARM_UP_DELAY_S + 10)  # warm: the analyst pages' modules imported in the background
        for path, marker in PAGES.items():
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            started = time.monotonic()
            page.goto(f"{server.url}/{path}")
            expect(page.get_by_text(marker).first).to_be_visible(timeout=TIMEOUT_MS)
            _settled(page)
            rows.append({"page": path or "home", "seconds": time.monotonic() - started,
                         "resident_mb": server.resident_mb()})
            page.close()
    return rows


def _tensorflow_loaded(server: Server) -> bool:
    """TensorFlow's shared library mapped into the server process: once loaded, it stays."""
    return "tensorflow" in Path(f"/proc/{server.pid}/maps").read_text()


def _upload(page, files: list[dict]) -> None:
    """Upload to the server: on the Screen page, its path chosen first (the bare app has only the uploader)."""
    upload = page.locator('input[type="file"]').first
    upload.wait_for(state="attached", timeout=TIMEOUT_MS)
    server_path = page.get_by_text("Upload to the server", exact=True)
    if server_path.count():
        server_path.click()
    upload = page.get_by_test_id("stFileUploaderDropzoneInput")
    upload.wait_for(state="attached", timeout=TIMEOUT_MS)
    upload.set_input_files(files=files)


def demo_tour(browser) -> tuple[list[dict], float, bool]:
    """The public demo, warm, by one visitor: each page with its defaults, then each toggle flipped
    with what it needs to appear. Returns each step's resident memory after it, the peak, and
    whether TensorFlow was loaded."""
    from playwright.sync_api import expect

    steps = []
    with streamlit_server(env={PUBLIC_DEMO_ENV: "1"}) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def done(step: str, marker: str) -> None:
            expect(page.get_by_text(marker).first).to_be_visible(timeout=TIMEOUT_MS)
            _settled(page)
            steps.append({"step": step, "resident_mb": server.resident_mb()})

        def flip(label: str, step: str, marker: str) -> None:
            page.get_by_text(label, exact=True).first.click()
            done(step, marker)

        page.goto(server.url)
        done("home, first page of the server", PAGES[""])
        time.sleep(WARM_UP_DELAY_S + 10)  # the analyst pages' modules imported in the background
        steps.append({"step": "analyst pages' modules imported", "resident_mb": server.resident_mb()})
        for path, marker in PAGES.items():
            page.goto(f"{server.url}/{path}")
            done(path or "home", marker)

        page.goto(f"{server.url}/screen")
        batch = [{"name": "chest.jpeg", "mimeType": "image/jpeg", "buffer": chest_jpeg(1, True)},
                 {"name": "chest.dcm", "mimeType": "application/dicom",
                  "buffer": make_dicom(chest_xray(2, False, 512).astype("uint16") * 16)}]
        # On this device first (the model files sent to the browser once), then the same on the server.
        chooser = page.get_by_test_id("on-device-input")
        expect(chooser).to_be_enabled(timeout=TIMEOUT_MS)
        chooser.set_input_files(files=batch)
        done("screen on this device: a JPEG and a DICOM file", "of 2 flagged")
        _upload(page, batch)
        done("screen on the server: the same two files", "of 2 flagged")
        page.get_by_text("Settings", exact=True).click()
        flip("Show heat maps on images not flagged", "screen: heat maps on images not flagged", "of 2 flagged")
        flip("Advanced: screen with another model", "screen: another model offered", "of 2 flagged")
        flip("Show patient details from the DICOM file", "screen: the DICOM file's patient details", "Doe^Jane")

        page.goto(f"{server.url}/explain")
        _upload(page, [{"name": "chest.png", "mimeType": "image/png", "buffer": encode(chest_xray(3, True, 512),
                                                                                       "PNG")}])
        done("explain: class activation map, activation maps", "Activation maps")
        flip("Occlusion sensitivity", "explain: occlusion sensitivity", "Activation maps")
        flip("Grad-CAM at a chosen layer", "explain: Grad-CAM chosen", "Load TensorFlow for Grad-CAM")
        flip("Load TensorFlow for Grad-CAM", "explain: Load TensorFlow for Grad-CAM (refused)",
             "past its memory budget")

        page.goto(f"{server.url}/explorer")
        flip(SOURCES_DOWNLOAD, "explorer: download source chosen", "Download into")
        page.get_by_role("button", name="Download").click()
        done("explorer: Download (refused)", "past its memory budget")
        peak, tensorflow = server.peak_mb(), _tensorflow_loaded(server)
        page.close()
    return steps, peak, tensorflow


def demo_main() -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        steps, peak, tensorflow = demo_tour(browser)
        browser.close()
    print(f"public demo ({PUBLIC_DEMO_ENV}=1), one visitor on every page and every toggle\n")
    print(f"{'step':<52}{'server memory':>15}")
    for row in steps:
        print(f"{row['step']:<52}{row['resident_mb']:>12.0f} MB")
    print(f"\npeak resident memory (VmHWM) {peak:.0f} MB (target < {DEMO_BUDGET_MB:.0f} MB): "
          f"{'met' if peak < DEMO_BUDGET_MB else 'MISSED'}; TensorFlow loaded: {'yes' if tensorflow else 'no'}")


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="the public demo's memory instead (CXR_PUBLIC_DEMO=1)")
    if parser.parse_args().demo:
        demo_main()
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        bare = first_result(browser, ROOT / "benchmarks" / "apps" / "bare_uploader.py")
        dashboard = first_result(browser, path="screen")
        visits = page_visits(browser)
        browser.close()
    print(f"launch to first result, phone-sized headless Chromium: dashboard {dashboard[1]:.1f} s "
          f"(server answered at {dashboard[0]:.1f} s), bare Streamlit app with one uploader {bare[1]:.1f} s "
          f"(at {bare[0]:.1f} s): ratio {dashboard[1] / bare[1]:.2f}, {dashboard[1] - bare[1]:+.1f} s")
    home = visits[0]["seconds"]
    print(f"\n{'page':<10}{'first render':>14}{'vs Home':>9}{'server memory':>15}")
    for row in visits:
        print(f"{row['page']:<10}{row['seconds']:>12.2f} s{row['seconds'] / home:>8.2f}x{row['resident_mb']:>12.0f} MB")
    peak = max(row["resident_mb"] for row in visits)
    slowest = max(row["seconds"] / home for row in visits)
    print(f"\nmemory after every page {peak:.0f} MB (target <= {MEMORY_TARGET_MB} MB): "
          f"{'met' if peak <= MEMORY_TARGET_MB else 'MISSED'}")
    print(f"slowest first render {slowest:.2f}x Home's (target <= {RENDER_TARGET}x): "
          f"{'met' if slowest <= RENDER_TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
