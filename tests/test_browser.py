"""End to end in a real browser: `streamlit run` on loopback, driven by Playwright in headless Chromium."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import encode, xray_like

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium keeps trying to reach Google's services, which this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package 'chromium')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("streamlit did not start: " + process.stdout.read().decode(errors="replace")[-2000:])
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_upload_shows_probability_and_heat_map(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        # Through the entry point, as a user arrives: it sets up st.navigation's pages.
        page.goto(server)
        expect(page.get_by_text("A screening aid, not a diagnosis.").first).to_be_visible(timeout=120_000)
        page.get_by_role("link", name="Screen").click()
        upload = page.locator('input[type="file"]')
        upload.wait_for(state="attached", timeout=60_000)
        upload.set_input_files(files=[{"name": "chest.jpeg", "mimeType": "image/jpeg",
                                       "buffer": encode(xray_like(1, True, 512))}])
        expect(page.get_by_text("Probability of pneumonia")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Heat map: where the model sees pneumonia")).to_be_visible(timeout=60_000)
        heat_map = page.locator('img[src*="media"]').first
        expect(heat_map).to_be_visible()
        assert heat_map.evaluate("img => img.naturalWidth") > 100
        probability = page.locator('[data-testid="stMetricValue"]').first.inner_text()
        assert probability.endswith("%")
        page.screenshot(path=str(ARTIFACTS / "browser_screen.png"), full_page=True)
        browser.close()
