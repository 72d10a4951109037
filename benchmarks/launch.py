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
"""
from __future__ import annotations

import time

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server
from core.analysis.synthetic import chest_jpeg
from ui.common import WARM_UP_DELAY_S

TIMEOUT_MS = 180_000
MEMORY_TARGET_MB = 350
RENDER_TARGET = 1.5
# page path ("" is Home) -> text that shows the page has run
PAGES = {"": "Model in use", "screen": "Screen chest X-rays", "explorer": "Class balance",
         "compare": "Threshold trade-off", "explain": "Choose an image to explain",
         "site": "Choose labelled local X-rays"}
RESULT = "Probability of pneumonia"


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
        upload = page.locator('input[type="file"]').first
        upload.wait_for(state="attached", timeout=TIMEOUT_MS)
        upload.set_input_files(files=[{"name": "chest.jpeg", "mimeType": "image/jpeg", "buffer": chest_jpeg()}])
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


def main() -> None:
    from playwright.sync_api import sync_playwright

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
