"""Screenshots of every page for the README: python -m benchmarks.screenshots (needs Chromium)."""
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server
from core.analysis.synthetic import chest_jpeg

OUT = ROOT / "docs" / "screenshots"
# page -> (navigation title, text that shows the page has finished)
PAGES = {"home": ("Home", "Model in use"), "screen": ("Screen", "Probability of pneumonia"),
         "explorer": ("Dataset explorer", "Class balance"), "compare": ("Model comparison", "Threshold trade-off"),
         "explain": ("Explain", "Activation maps")}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    upload = {"name": "synthetic_chest.jpeg", "mimeType": "image/jpeg", "buffer": chest_jpeg(3, True, 512)}
    with streamlit_server() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        for name, (title, ready) in PAGES.items():
            page.get_by_role("link", name=title).click()
            if name in ("screen", "explain"):
                page.locator('input[type="file"]').set_input_files(files=[upload])
            expect(page.get_by_text(ready).first).to_be_visible(timeout=120_000)
            page.wait_for_timeout(4000)  # let charts and images settle
            page.screenshot(path=str(Path(OUT / f"{name}.png")), full_page=name != "compare")
            if name == "compare":
                page.get_by_role("tab", name="Shift check").click()
                page.mouse.move(800, 500)
                page.mouse.wheel(0, 560)  # the page scrolls inside Streamlit's main block, not the window
                page.wait_for_timeout(3000)
                page.screenshot(path=str(OUT / "shift.png"))
        browser.close()


if __name__ == "__main__":
    main()
