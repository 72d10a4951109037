"""Launch to first result, and the server's memory: what a clinic's first user of the day waits for.

Usage: python -m benchmarks.launch
Starts `streamlit run` as README command 1 does, opens Screen in headless Chromium as soon as
the server answers, uploads a 1024-px X-ray and waits for the result. Prints the time from
launch to that result, the server's resident memory after Home and Screen, and after every page.
"""
from __future__ import annotations

import time

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from core.analysis.synthetic import chest_jpeg

TIMEOUT_MS = 180_000
# page path -> text that shows the page has run
PAGES = {"explorer": "Class balance", "compare": "Threshold trade-off", "explain": "Choose an image to explain",
         "site": "Choose labelled local X-rays"}


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        with streamlit_server() as server:
            serving = time.monotonic()
            page.goto(f"{server.url}/screen")
            upload = page.locator('input[type="file"]').first
            upload.wait_for(state="attached", timeout=TIMEOUT_MS)
            upload.set_input_files(files=[{"name": "chest.jpeg", "mimeType": "image/jpeg", "buffer": chest_jpeg()}])
            expect(page.get_by_text("Probability of pneumonia")).to_be_visible(timeout=TIMEOUT_MS)
            first_result = time.monotonic()
            page.goto(server.url)
            expect(page.get_by_text("Model in use")).to_be_visible(timeout=TIMEOUT_MS)
            after_screen = server.resident_mb()
            for path, ready in PAGES.items():
                page.goto(f"{server.url}/{path}")
                expect(page.get_by_text(ready).first).to_be_visible(timeout=TIMEOUT_MS)
                time.sleep(3)  # let each page finish its first run
            after_all = server.resident_mb()
        browser.close()
    print(f"launch to health check: {serving - server.started:.1f} s")
    print(f"launch to first screening result (phone, headless Chromium): {first_result - server.started:.1f} s "
          f"({first_result - serving:.1f} s after the server answered)")
    print(f"server resident memory after Home and Screen: {after_screen:.0f} MB")
    print(f"server resident memory after every page: {after_all:.0f} MB")


if __name__ == "__main__":
    main()
