"""Screenshots of every page for the README, on a desktop and the Screen page on a phone:
python -m benchmarks.screenshots [PAGE...] (needs Chromium). Every image shown is synthetic."""
import argparse
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from benchmarks.site_results import results_csv
from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server
from core.analysis.synthetic import chest_jpeg

OUT = ROOT / "docs" / "screenshots"
# page -> (navigation title, text that shows the page has finished)
PAGES = {"home": ("Home", "Model in use"), "screen": ("Screen", "Probability of pneumonia"),
         "explorer": ("Dataset explorer", "Class balance"), "compare": ("Model comparison", "Threshold trade-off"),
         "explain": ("Explain", "Activation maps")}


SITE_ROWS = 120  # screened synthetic X-rays with their diagnoses, for the Site calibration page
BATCH = [{"name": f"synthetic_{i}.jpeg", "mimeType": "image/jpeg", "buffer": chest_jpeg(i, i % 3 == 0, 512)}
         for i in range(5)] + [{"name": "scan_of_a_letter.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n"}]


def phone_screen(browser, url: str) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page.set_default_timeout(120_000)
    page.goto(f"{url}/screen")
    page.locator('input[type="file"]').first.set_input_files(files=BATCH)
    expect(page.get_by_text("flagged for clinical review")).to_be_visible(timeout=120_000)
    page.wait_for_timeout(4000)
    page.get_by_text("Summary", exact=True).scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(OUT / "screen_phone.png"), full_page=False)
    page.get_by_text("Probability of pneumonia").nth(1).scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(OUT / "screen_phone_cards.png"), full_page=False)
    page.close()


def site_page(page) -> None:
    page.get_by_role("link", name="Site calibration").click()
    page.locator('input[type="file"]').first.set_input_files(
        files=[{"name": "screening_results.csv", "mimeType": "text/csv", "buffer": results_csv(SITE_ROWS)}])
    page.get_by_role("button", name="Calibrate").click()
    expect(page.get_by_text("Download the site profile")).to_be_visible(timeout=180_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(OUT / "site.png"), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pages", nargs="*", choices=[*PAGES, "phone", "site"], help="only these (default: all)")
    wanted = set(parser.parse_args().pages or [*PAGES, "phone", "site"])
    OUT.mkdir(parents=True, exist_ok=True)
    upload = {"name": "synthetic_chest.jpeg", "mimeType": "image/jpeg", "buffer": chest_jpeg(3, True, 512)}
    with streamlit_server() as server, sync_playwright() as playwright:
        url = server.url
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        if "phone" in wanted:
            phone_screen(browser, url)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        for name, (title, ready) in PAGES.items():
            if name not in wanted:
                continue
            page.get_by_role("link", name=title).click()
            if name == "screen":
                page.locator('input[type="file"]').first.set_input_files(files=BATCH)
            if name == "explain":
                page.locator('input[type="file"]').first.set_input_files(files=[upload])
            expect(page.get_by_text(ready).first).to_be_visible(timeout=120_000)
            page.wait_for_timeout(4000)  # let charts and images settle
            page.screenshot(path=str(Path(OUT / f"{name}.png")), full_page=name != "compare")
            if name == "compare":
                page.get_by_role("button", name="Shift check").click()
                page.mouse.move(800, 500)
                page.mouse.wheel(0, 560)  # the page scrolls inside Streamlit's main block, not the window
                page.wait_for_timeout(3000)
                page.screenshot(path=str(OUT / "shift.png"))
        if "site" in wanted:
            site_page(page)
        browser.close()


if __name__ == "__main__":
    main()
