"""End to end in a real browser: `streamlit run` on loopback, driven by Playwright in headless Chromium."""
import asyncio
import re

import pytest
from conftest import encode, xray_like
from playwright.sync_api import expect

from benchmarks.browser_load import run_sessions
from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server

ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package 'chromium')")


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as running:
        yield running.url


def _photo_png() -> bytes:
    import numpy as np

    rgb = np.zeros((200, 200, 3), np.uint8)
    rgb[..., 0], rgb[50:150, 50:150, 1] = 200, 255  # a colour picture, not an X-ray
    return encode(rgb, "PNG")


def server_uploader(page):
    """The server path's file input. Screening on the device is offered first where the browser passes its
    self-test (tests/test_on_device.py): wait for that to finish, then choose the server, as a user does."""
    status = page.get_by_test_id("on-device-status")
    status.wait_for(state="attached", timeout=120_000)
    expect(status).to_have_attribute("data-phase", re.compile("^(ready|off)$"), timeout=120_000)
    page.get_by_text("Upload to the server").click()
    upload = page.get_by_test_id("stFileUploaderDropzoneInput")
    upload.wait_for(state="attached", timeout=60_000)
    return upload


def open_page(page, name: str, ready: str) -> None:
    """Navigate inside the app (the session, and so its results, is kept); on a phone the
    navigation sits in a collapsed sidebar that has to be opened first."""
    expand = page.get_by_role("button", name="Expand sidebar")
    if page.viewport_size["width"] < 700 and expand.is_visible():
        expand.click()
    page.get_by_role("link", name=name).click()
    expect(page.get_by_text(ready).first).to_be_visible(timeout=60_000)


@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}, {"width": 1400, "height": 1000}],
                         ids=["phone", "desktop"])
def test_triage_persistence_and_explain_refusal_in_a_real_browser(server, viewport):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=viewport)
        # Through the entry point, as a user arrives: it sets up st.navigation's pages.
        page.goto(server)
        expect(page.get_by_text("A screening aid, not a diagnosis.").first).to_be_visible(timeout=120_000)
        page.goto(f"{server}/screen")
        upload = server_uploader(page)
        upload.set_input_files(files=[
            {"name": f"chest{i}.jpeg", "mimeType": "image/jpeg", "buffer": encode(xray_like(i, i % 2 == 1, 512))}
            for i in range(3)] + [{"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\nx"}])
        expect(page.get_by_text("of 4 flagged")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("1 refused")).to_be_visible()
        expect(page.get_by_text("Probability of pneumonia")).to_have_count(3)
        assert not page.get_by_text("100.0%").count() and not page.get_by_text("0.0%", exact=True).count()
        page.get_by_text("Settings").click()
        page.get_by_text("Show heat maps on images not flagged").click()
        expect(page.get_by_text("Heat map: red areas").first).to_be_visible(timeout=60_000)
        image = page.locator('img[src*="media"]').first
        # The element can be in the page before its bytes are: wait for the load (it flaked on a busy machine).
        image.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done, {once: true}))")
        assert image.evaluate("img => img.naturalWidth") > 100
        page.screenshot(path=str(ARTIFACTS / f"browser_screen_{viewport['width']}.png"), full_page=True)

        open_page(page, "Home", "Model in use")
        open_page(page, "Screen", "Your last batch (4 images)")
        expect(page.get_by_text("of 4 flagged")).to_be_visible()

        open_page(page, "Explain", "Choose an image to explain")
        upload = page.locator('input[type="file"]').first
        upload.wait_for(state="attached", timeout=60_000)
        upload.set_input_files(files=[{"name": "photo.png", "mimeType": "image/png", "buffer": _photo_png()}])
        expect(page.get_by_text("not a chest X-ray").first).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Probability of pneumonia")).to_have_count(0)
        assert not page.get_by_text("Traceback").count()
        browser.close()


def test_a_bookmarked_page_opens_inside_the_app():
    """A clinic's bookmark of the Screen page, as the first request of a freshly started server:
    it opens through the entry point, with the app's navigation and title (Streamlit once ran the
    page file on its own when the page folder was named pages/)."""
    from playwright.sync_api import sync_playwright

    with streamlit_server() as running, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{running.url}/screen")
        expect(page.locator('input[type="file"]').first).to_be_attached(timeout=120_000)
        navigation = page.get_by_test_id("stSidebarNav")
        expect(navigation.get_by_role("link", name="Site calibration")).to_be_visible()
        expect(navigation.get_by_role("link", name="streamlit app")).to_have_count(0)
        assert page.title() == "Chest X-ray pneumonia screening"
        browser.close()


def test_ten_simultaneous_sessions_all_get_results(server):
    results = asyncio.run(run_sessions(server, 10))
    assert len(results) == 10 and all(server_ms > 0 for _, server_ms in results)


def test_a_photo_of_a_film_is_straightened_and_screened_in_a_real_browser(server):
    """A health worker's phone photo of a film, slanted: found, shown straightened beside the photo,
    the slant's retake hint above the verdict; and the guide to photographing films opens."""
    from dataclasses import replace

    import numpy as np
    from playwright.sync_api import sync_playwright

    from core.analysis.photos import PHOTO, film_photo

    photo = film_photo(xray_like(2, True, 512), replace(PHOTO, keystone=0.12), np.random.default_rng(0)).data
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(f"{server}/screen")
        upload = server_uploader(page)
        upload.set_input_files(files=[{"name": "film.jpeg", "mimeType": "image/jpeg", "buffer": photo}])
        expect(page.get_by_text("Photo of a film, straightened")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("As sent", exact=True)).to_be_visible()
        hint = page.get_by_text("Result may be unreliable: the photo was taken at a slant")
        verdict = page.get_by_text("Probability of pneumonia")
        expect(hint).to_be_visible()
        assert hint.bounding_box()["y"] < verdict.bounding_box()["y"]  # the warning comes before the verdict
        page.get_by_text("Photographing a film?").click()
        expect(page.get_by_text("A good photo: the film on a lightbox")).to_be_visible(timeout=60_000)
        guide = page.get_by_test_id("stExpander").filter(has_text="Photographing a film?")
        picture = guide.locator('img[src*="media"]').first
        picture.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done, {once: true}))")
        assert picture.evaluate("img => img.naturalWidth") > 100
        assert not page.get_by_text("Traceback").count()
        page.screenshot(path=str(ARTIFACTS / "browser_photo_of_film.png"), full_page=True)
        browser.close()
