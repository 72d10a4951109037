"""End to end in a real browser: `streamlit run` on loopback, driven by Playwright in headless Chromium."""
import asyncio

import pytest
from conftest import encode, xray_like

from benchmarks.browser_load import run_sessions
from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server

ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package 'chromium')")


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as url:
        yield url


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


def test_ten_simultaneous_sessions_all_get_results(server):
    times = asyncio.run(run_sessions(server, 10))
    assert len(times) == 10
