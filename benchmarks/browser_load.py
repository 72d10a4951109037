"""Load on the real server: N browser sessions at once, each uploads an X-ray and waits for its result.

Usage: python -m benchmarks.browser_load [--users 10]
Prints each session's time from upload to result, and the server's own screening time
for it (shown on the result card), so the rest is the browsers' and the transport's share.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import time

import numpy as np

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from core.analysis.synthetic import chest_jpeg

RESULT_TIMEOUT_MS = 180_000


RESULT_TEXT = "flagged for clinical review"  # the triage summary, shown once the batch is screened


async def one_session(browser, url: str, index: int) -> tuple[float, float]:
    """(seconds from upload to result in the browser, the server's milliseconds for the screening)."""
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(RESULT_TIMEOUT_MS)  # ten pages at once on two cores load slowly
    page = await context.new_page()
    await page.goto(url)
    await page.get_by_role("link", name="Screen").click(timeout=RESULT_TIMEOUT_MS)
    # Screening on the device is offered first where the browser passes its self-test: once that is
    # done, choose the server, whose load this measures.
    await expect(page.get_by_test_id("on-device-status")).to_have_attribute(
        "data-phase", re.compile("^(ready|off)$"), timeout=RESULT_TIMEOUT_MS)
    await page.get_by_text("Upload to the server").click()
    upload = page.get_by_test_id("stFileUploaderDropzoneInput")
    await upload.wait_for(state="attached", timeout=RESULT_TIMEOUT_MS)
    started = time.perf_counter()
    await upload.set_input_files(files=[{"name": f"chest{index}.jpeg", "mimeType": "image/jpeg",
                                         "buffer": chest_jpeg(index, index % 2 == 0, 512)}])
    await expect(page.get_by_text(RESULT_TEXT)).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    await expect(page.get_by_text("Probability of pneumonia")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    elapsed = time.perf_counter() - started
    caption = await page.get_by_text(re.compile(r"threshold .* ms$")).first.inner_text()
    await context.close()
    return elapsed, float(re.search(r"(\d+) ms$", caption).group(1))


async def run_sessions(url: str, sessions: int) -> list[tuple[float, float]]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Warm the server (model load, first trace) once, as a deployed app would be.
        await one_session(browser, url, 0)
        times = await asyncio.gather(*(one_session(browser, url, i) for i in range(1, sessions + 1)))
        await browser.close()
    return list(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10, help="browsers screening at once")
    args = parser.parse_args()
    with streamlit_server() as server:
        results = asyncio.run(run_sessions(server.url, args.users))
    times = [t for t, _ in results]
    server_ms = [ms for _, ms in results]
    print(f"{len(results)} simultaneous sessions, all got a result")
    print("seconds from upload to result:", " ".join(f"{t:.1f}" for t in sorted(times)))
    print(f"median {np.median(times):.1f} s, max {max(times):.1f} s; the server's own screening time: "
          f"median {np.median(server_ms):.0f} ms, max {max(server_ms):.0f} ms (the rest is browsers, "
          "transport and Streamlit's page rendering, all on the same cores)")


if __name__ == "__main__":
    main()
