"""Screening on the device (issue #39): the pinned browser libraries, the self-test's probe, the words for
the browser's codes, and, in headless Chromium against `streamlit run`, that no image byte leaves the
browser, that it gives the server path's answers, that the self-test turns the mode off when it fails,
and that a second visit takes the model from the browser's cache."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import re
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest
from conftest import OPENCV_IN_NODE, encode, real_data_dir, requires_real_data, xray_like

from benchmarks.streamlit_server import CHROMIUM, CHROMIUM_ARGS, ROOT, streamlit_server

COMPONENT = ROOT / "components" / "on_device"
FRONTEND = COMPONENT / "streamlit_cxr_on_device" / "frontend"
PARITY = 1e-3  # the bound on |on-device - server| probability
REAL_PARITY_FILES = 200
browser_test = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package 'chromium')")


@pytest.fixture(scope="module")
def predictor():
    from core.serving.predictor import Predictor

    return Predictor.load()


def _vendor_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("on_device_vendor", COMPONENT / "vendor.py")
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    return vendor


def test_the_vendored_browser_libraries_have_their_pinned_hashes():
    assert _vendor_script().mismatches() == []
    assert (FRONTEND / "vendor" / "onnxruntime-web" / "LICENSE").exists()


def _single_file_script(wasm: bytes) -> bytes:
    """An Emscripten SINGLE_FILE script around `wasm`, written as its build writes one: each byte a char,
    UTF-8 in the file, with backslash, quote, CR and LF escaped."""
    literal = wasm.decode("latin-1")
    for char, escaped in (("\\", "\\\\"), ("'", "\\'"), ("\r", "\\r"), ("\n", "\\n")):
        literal = literal.replace(char, escaped)
    return (b"(function(){var cv=(()=>{function findWasmBinary(){return binaryDecode('" + literal.encode("utf-8")
            + b"')}function getBinarySync(file){return file}})();return cv(Module);})")


def test_opencv_js_is_split_into_its_wasm_and_the_script_around_it():
    vendor = _vendor_script()
    wasm = b"\0asm\1\0\0\0" + bytes(range(256)) + b"\\'\r\n"  # every byte, and each escaped one
    parts = vendor.split_opencv_js(_single_file_script(wasm))
    assert parts["opencv-js/opencv.wasm"] == wasm
    assert parts["opencv-js/opencv-glue.js"] == (b"(function(){var cv=(()=>{function findWasmBinary(){return "
                                                 b"binaryDecode('')}function getBinarySync(file){return file}})();"
                                                 b"return cv;})")
    assert set(parts) == set(vendor.SPLIT)
    with pytest.raises(SystemExit, match="escapes this split does not know"):
        vendor.split_opencv_js(_single_file_script(wasm).replace(b"\\r", b"\\t", 1))
    with pytest.raises(SystemExit, match="one char per byte"):
        vendor.split_opencv_js(_single_file_script(wasm).replace(b"\0asm", "\0\u0100sm".encode(), 1))
    with pytest.raises(SystemExit, match="once"):  # another build's layout: refused, not half split
        vendor.split_opencv_js(_single_file_script(wasm).replace(b"return cv(Module);", b"return cv(M);"))


def test_the_component_is_installed_from_the_repository():
    """requirements.txt installs it (README command 1) as an editable package, so the assets Streamlit
    serves are the repository's files: one copy, none under site-packages."""
    import streamlit_cxr_on_device

    assert "-e ./components/on_device" in (ROOT / "requirements.txt").read_text().splitlines()
    assert streamlit_cxr_on_device.__file__.startswith(str(COMPONENT))
    assert not list(COMPONENT.rglob("*.onnx")), "a model file copied under the component"


def test_the_self_test_probe_is_made_for_the_shipped_files(predictor):
    """The probe names the default model, localiser and X-ray check it was made for, and holds what
    Python's onnxruntime gives for them now: stale, rerun `python3 -m ui.on_device --write-probe`."""
    from ui import on_device

    probe = json.loads(on_device.PROBE.read_text())
    files = {f["role"]: f["sha256"] for f in on_device.assets(predictor)}
    assert probe["sha256"] == {"model": files["model"], "localiser": files.get("localiser"),
                               "detector": files["detector"]}
    expected = on_device.probe_expected(predictor, on_device.probe_image())
    assert probe["expected"]["frame"] == expected["frame"]
    assert np.allclose(probe["expected"]["raws"], expected["raws"], atol=1e-6)


def test_browser_rows_get_the_server_paths_calibration_threshold_and_words(predictor):
    from ui import on_device

    sha = predictor.card.onnx["sha256"]
    recipe = on_device.browser_recipe(predictor)
    browser_row = {"file": "a.png", "status": "ok", "raw": 0.3, "model_sha256": sha, "id": "1/0",
                   "image_sha256": "ab" * 32, "input_kind": "digital", "recipe": recipe,
                   "quality": {"std": 0.05, "clipped": 0.0, "width": 150, "height": 180}}
    ok = on_device.row_from(browser_row, predictor, "screening")
    # The card's Platt scaling, by hand: sigmoid(slope * logit(raw) + intercept).
    card = predictor.card.calibration
    probability = 1 / (1 + math.exp(-(card["slope"] * math.log(0.3 / 0.7) + card["intercept"])))
    assert ok.status == "ok" and ok.result.probability == pytest.approx(probability)
    assert (ok.raw_output, ok.raw_recipe, ok.image_sha256) == (0.3, predictor.raw_recipe, "ab" * 32)
    assert ok.rescored(predictor, "balanced").threshold == predictor.operating_points["balanced"]
    assert ok.label == predictor.label_for(probability) and ok.picture_id == "1/0"
    assert ok.result.warnings == ["low contrast: the result may be unreliable",
                                  "low resolution (150x180): the result may be unreliable"]
    stale = on_device.row_from({**browser_row, "model_sha256": "0" * 64}, predictor, "screening")
    assert stale.status == "error" and "another model file" in stale.message
    zoomed = on_device.row_from({**browser_row, "recipe": {**recipe, "zooms": [1.0]}}, predictor, "screening")
    assert zoomed.status == "error" and "other test-time zooms" in zoomed.message
    # A code's word left out by the browser reads "?", rather than failing the batch.
    small = on_device.row_from({"file": "d.png", "status": "error", "code": "too_small"}, predictor, "screening")
    assert small.message == "the image is too small (?x? pixels)"
    elongated = on_device.row_from({"file": "b.png", "status": "rejected", "code": "elongated", "width": 300,
                                    "height": 100, "input_kind": "digital"}, predictor, "screening")
    assert elongated.message == "not a chest X-ray: the image is too elongated (300x100)"
    dicom = on_device.row_from({"file": "c.dcm", "status": "server", "code": "dicom_syntax",
                                "transfer_syntax": "1.2.840.10008.1.2.4.50"}, predictor, "screening")
    assert dicom.status == "error" and "Upload to the server" in dicom.message
    assert "compressed as JPEG Baseline (Process 1)" in dicom.message


def test_every_code_the_browser_returns_has_its_words():
    """Read from the pipeline's own source, so that a new refusal or hand-over cannot reach a health worker
    as a bare code."""
    from ui import on_device

    source = "".join((FRONTEND / name).read_text() for name in ("pipeline.js", "dicom.js"))
    handed = set(re.findall(r'(?:fail|refused)\("server", "(\w+)"', source))
    refused = set(re.findall(r'(?:fail|refused)\("(?:error|rejected)", "(\w+)"', source))
    refused |= set(re.findall(r'error: "(\w+)"', source))  # stretched()'s
    assert {"camera", "dicom_syntax"} <= handed and {"decompression_bomb", "dicom_modality", "blank"} <= refused
    assert handed <= set(on_device.NOT_ON_DEVICE), handed - set(on_device.NOT_ON_DEVICE)
    words = set(on_device._errors())
    assert refused <= words, refused - words


def test_handed_files_are_named_with_their_reasons_and_only_theirs_are_taken_from_an_upload():
    from ui import on_device

    film = b"\xff\xd8bytes"
    batch = {"batch": 3, "rows": [
        {"file": "chest.png", "status": "ok"},
        {"file": "film.jpeg", "status": "server", "code": "camera", "image_sha256": hashlib.sha256(film).hexdigest()},
        {"file": "c.dcm", "status": "server", "code": "dicom_syntax", "transfer_syntax": "1.2.840.10008.1.2.4.50"}]}
    assert on_device.handed_note(batch["rows"]) == (
        "Not screened on this device: film.jpeg (it is a camera's photo: only the server finds the film in those); "
        "c.dcm (a DICOM compressed as JPEG Baseline (Process 1) is not read in the browser yet).")
    assert on_device.handed_note(batch["rows"], {1}).startswith("Not screened on this device: c.dcm (")
    assert on_device.handed_note(batch["rows"], {1, 2}) == ""

    def sent(index, name, data=b"\xff\xd8bytes"):
        return {"index": index, "name": name, "data": base64.b64encode(data).decode()}

    upload = {"batch": 3, "files": [sent(1, "film.jpeg"), sent(0, "chest.png"), sent(2, "other.dcm"), sent(7, "x")]}
    # Only the batch's handed files, under their own names: not one it screened, renamed or out of range.
    assert on_device.handed_uploads(upload, batch) == [(1, "film.jpeg", b"\xff\xd8bytes")]
    assert on_device.handed_uploads({**upload, "batch": 2}, batch) == []  # an earlier batch's
    assert on_device.handed_uploads(None, batch) == []
    # Not the file the browser screened (another's bytes under its name), or not base64: not taken.
    assert on_device.handed_uploads({"batch": 3, "files": [sent(1, "film.jpeg", b"other")]}, batch) == []
    assert on_device.handed_uploads({"batch": 3, "files": [{**sent(1, "film.jpeg"), "data": "*not base64*"}, 5]},
                                    batch) == []


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_opencv_js_gives_opencvs_pixels(tmp_path):
    """The resizes and CLAHE of the browser's pipeline, in OpenCV.js under node, equal the server's
    opencv-python bit for bit on random and X-ray-like images; the float zoom to 1e-5."""
    import cv2

    rng = np.random.default_rng(3)
    images = {"noise": rng.integers(0, 256, (517, 403), dtype=np.uint8), "xray": xray_like(4, True, 300)}
    expected = {}
    for name, image in images.items():
        image.tofile(tmp_path / f"{name}.raw")
        area = {str(side): cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA).ravel().tolist()
                for side in (32, 64, 96, 160)}
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(
            cv2.resize(image, (160, 160), interpolation=cv2.INTER_AREA))
        small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        laplacian = float(np.abs(cv2.Laplacian(small, cv2.CV_32F)).mean())
        expected[name] = {"shape": image.shape, "area": area, "clahe": clahe.ravel().tolist(), "laplacian": laplacian}
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    script = f"""
const fs = require("fs");
(async () => {{
  {OPENCV_IN_NODE}
  const expected = JSON.parse(fs.readFileSync("expected.json"));
  const out = {{}};
  for (const [name, want] of Object.entries(expected)) {{
    const [h, w] = want.shape;
    const src = new cv.Mat(h, w, cv.CV_8UC1);
    src.data.set(fs.readFileSync(name + ".raw"));
    const diffs = {{}};
    for (const side of Object.keys(want.area)) {{
      const dst = new cv.Mat();
      cv.resize(src, dst, new cv.Size(+side, +side), 0, 0, cv.INTER_AREA);
      diffs["area" + side] = want.area[side].filter((v, i) => v !== dst.data[i]).length;
      if (side === "160") {{
        const clahe = new cv.CLAHE(2.0, new cv.Size(8, 8)), c = new cv.Mat();
        clahe.apply(dst, c);
        diffs.clahe = want.clahe.filter((v, i) => v !== c.data[i]).length;
      }}
    }}
    const small = new cv.Mat(), f = new cv.Mat(), lap = new cv.Mat();
    cv.resize(src, small, new cv.Size(64, 64), 0, 0, cv.INTER_AREA);
    small.convertTo(f, cv.CV_32F);
    cv.Laplacian(f, lap, cv.CV_32F);
    diffs.laplacian = Math.abs(lap.data32F.reduce((s, v) => s + Math.abs(v), 0) / lap.data32F.length - want.laplacian);
    out[name] = diffs;
  }}
  console.log(JSON.stringify(out));
}})();
"""
    (tmp_path / "check.js").write_text(script)
    done = subprocess.run(["node", "check.js"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    for name, diffs in json.loads(done.stdout.strip().splitlines()[-1]).items():
        assert diffs.pop("laplacian") < 1e-4, name
        assert diffs == {key: 0 for key in diffs}, name


# --- In headless Chromium against the running dashboard ---

def synthetic_files() -> list[tuple[str, bytes]]:
    """X-ray-like pictures in the forms the browser reads, and the bad inputs it must refuse as the
    server does."""
    files = [(f"chest{i}.png", encode(xray_like(i, i % 2 == 1, 256), "PNG")) for i in range(4)]
    files += [(f"chest{i}.jpeg", encode(xray_like(i, i % 2 == 0, 400))) for i in range(4, 7)]
    files.append(("rgb.png", encode(np.repeat(xray_like(9, True, 300)[..., np.newaxis], 3, axis=2), "PNG")))
    upside_down = np.ascontiguousarray(xray_like(5, False, 256)[::-1])
    files += [
        ("empty.png", b""),
        ("notes.txt", b"not an image at all, just words"),
        ("broken.png", encode(xray_like(3, True, 256), "PNG")[:400]),
        ("tiny.png", encode(xray_like(2, True, 24), "PNG")),
        ("blank.png", encode(np.full((200, 200), 90, np.uint8), "PNG")),
        ("elongated.png", encode(np.hstack([xray_like(6, True, 200)] * 3), "PNG")),
        ("upside_down.png", encode(upside_down, "PNG")),
    ]
    return files


def large_and_turned_jpegs() -> list[tuple[str, bytes]]:
    """JPEGs that Pillow decodes at reduced scale (1/2 to 1/8), and ones turned by EXIF or XMP orientation."""
    from PIL import Image

    files = [(f"large{size}.jpeg", encode(xray_like(30 + i, i % 2 == 0, size), quality=90))
             for i, size in enumerate((600, 1024, 1500, 2100))]
    files.append(("large_rgb.jpeg", encode(np.repeat(xray_like(35, True, 1300)[..., np.newaxis], 3, axis=2))))
    files.append(("large_progressive.jpeg", encode(xray_like(36, False, 1800), progressive=True, quality=85)))
    # Stored turned the other way, so that Pillow's exif_transpose sets each upright again.
    undo = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}
    for orientation, transpose in undo.items():
        stored = Image.fromarray(xray_like(40 + orientation, orientation % 2 == 0, 700)[:, 20:-20]).transpose(transpose)
        exif = Image.Exif()
        exif[0x0112] = orientation
        files.append((f"exif{orientation}.jpeg", encode(np.asarray(stored), exif=exif.tobytes())))
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="3"/></rdf:RDF></x:xmpmeta>')
    files.append(("xmp3.jpeg", encode(np.ascontiguousarray(xray_like(49, True, 500)[::-1, ::-1]), xmp=xmp)))
    return files


def server_rows(predictor, files: list[tuple[str, bytes]]) -> dict[str, object]:
    from core.serving import screening

    return {name: screening.screen_bytes(predictor, name, data) for name, data in files}


def _wait_ready(page, timeout_s: float = 120) -> dict:
    """The component's report once its self-test is done (data attributes of its status line)."""
    status = page.get_by_test_id("on-device-status")
    status.wait_for(state="attached", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        phase = status.get_attribute("data-phase")
        if phase in ("ready", "off"):
            return {"phase": phase, "text": status.text_content(),
                    "downloaded": int(status.get_attribute("data-downloaded") or 0)}
        time.sleep(0.2)
    raise AssertionError(f"the on-device self-test did not finish: {status.text_content()}")


def _screen_on_device(page, files: list[tuple[str, bytes]]) -> list[dict]:
    """Choose the files in the component's own input, wait for the batch, and read its CSV."""
    from playwright.sync_api import expect

    chooser = page.get_by_test_id("on-device-input")
    expect(chooser).to_be_enabled(timeout=60_000)
    chooser.set_input_files(files=[
        {"name": name, "mimeType": "image/png" if name.endswith(".png") else "image/jpeg", "buffer": data}
        for name, data in files])
    expect(page.get_by_text(f"of {len(files)} flagged").first).to_be_visible(timeout=600_000)
    return _results_csv(page)


def _held_still(locator, timeout_s: float = 60) -> None:
    """Until the element has not moved for a second: each result card's picture is drawn by its own
    component once its script has loaded, and each one drawn pushes what lies below it down the page,
    where a click pressed at the button's place and released after it moved reaches no button."""
    boxes, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        boxes = [*boxes[-4:], locator.bounding_box()]
        if len(boxes) == 5 and boxes[0] is not None and all(box == boxes[0] for box in boxes):
            return
        time.sleep(0.25)
    raise AssertionError(f"the element kept moving: {boxes}")


def _results_csv(page) -> list[dict]:
    """The batch's rows, from its CSV download, once the page's run is over (a download button of the run
    before can still be on the page while the next one draws)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page.wait_for_timeout(200)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=120_000)
    button = page.get_by_role("button", name="Download results (CSV)")
    if not button.is_visible():
        page.get_by_text("Table and CSV download").click()
    button.scroll_into_view_if_needed()
    for attempt in range(3):  # a picture drawn late, after the button held still, can still move it
        _held_still(button)
        try:
            with page.expect_download(timeout=20_000) as download:
                button.click()
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    return list(csv.DictReader(io.StringIO(download.value.path().read_text())))


def _assert_parity(browser: list[dict], server: dict[str, object]) -> dict:
    """Same status, reason and input kind as the server path, probabilities within PARITY; the files
    that the browser sent to the server path are returned apart, with the largest difference."""
    handed, differences = [], []
    for row in browser:
        expected = server[row["file"]]
        if row["message"].startswith("not screened on this device"):
            handed.append(row["file"])
            continue
        assert row["status"] == expected.status, (row, expected)
        assert row["message"] == expected.message, (row, expected)
        assert (row["input_kind"] or None) == expected.input_kind, (row, expected)
        if expected.status == "ok":
            differences.append(abs(float(row["probability"]) - expected.probability))
            assert differences[-1] <= PARITY, (row, expected.probability)
            # A clinic labels these rows to calibrate its site: they carry what the server's carry.
            assert (row["image_sha256"], row["raw_recipe"]) == (expected.image_sha256, expected.raw_recipe), row
            assert abs(float(row["raw_output"]) - expected.raw_output) <= PARITY, (row, expected.raw_output)
    return {"handed_to_server": handed, "max_difference": max(differences, default=0.0), "screened": len(differences)}


def _watch(page) -> dict:
    """Everything the page sends: websocket frames and requests."""
    sent: dict = {"frames": [], "requests": [], "received_bytes": 0}

    def on_socket(socket):
        socket.on("framesent", lambda payload: sent["frames"].append(
            payload if isinstance(payload, bytes) else payload.encode()))
        socket.on("framereceived", lambda payload: sent.__setitem__(
            "received_bytes", sent["received_bytes"] + len(payload)))

    page.on("websocket", on_socket)
    page.on("request", lambda request: sent["requests"].append(request.url))
    return sent


def _ready_screen(chromium, server) -> tuple:
    """A new browser profile on the Screen page, its on-device start passed: (context, page, what the page
    sends, watched from before it opened its websocket, the start's own traffic cleared)."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    watched = _watch(page)
    page.goto(f"{server.url}/screen")
    assert _wait_ready(page)["phase"] == "ready"
    watched["frames"].clear()
    watched["requests"].clear()
    return context, page, watched


def _slices(data: bytes):
    """48-byte slices across a file, each with its base64 as it reads inside the whole file's (the
    slices start at multiples of 3 bytes, so that their base64 lines up with the file's)."""
    for start in range(0, max(len(data) - 48, 1), 3 * max(len(data) // 15, 1)):
        piece = data[start:start + 48]
        if len(piece) >= 24 and len(set(piece)) > 4:  # a run of one byte value says nothing
            yield piece, base64.b64encode(piece)[8:40]


def _assert_no_slice_sent(files: list[tuple[str, bytes]], watched: dict) -> None:
    """No upload, and no slice of any file in what the page sent (raw or base64), nor more than a few KB a file."""
    assert not [url for url in watched["requests"] if "upload_file" in url]
    frames = b"".join(watched["frames"])
    for name, data in files:
        for piece, encoded in _slices(data):
            assert piece not in frames, name
            assert encoded not in frames, name
    assert watched["frames"], "no websocket frame seen: the watch is blind"
    assert max(map(len, watched["frames"])) <= 4096 * len(files)
    assert len(frames) <= 4096 * len(files)


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as running:
        yield running


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@browser_test
def test_on_device_no_image_byte_leaves_and_the_answers_are_the_servers(server, chromium, predictor):
    from playwright.sync_api import expect

    files = synthetic_files()
    context, page, watched = _ready_screen(chromium, server)
    before = server.resident_mb()
    rows = _screen_on_device(page, files)
    _assert_no_slice_sent(files, watched)
    expected = server_rows(predictor, files)
    parity = _assert_parity(rows, expected)
    # An elongated picture is not plainly a digital X-ray: the server looks for a film in it first, which
    # the browser cannot yet, so it is handed over (with its reason) rather than refused differently.
    # A PNG cut short is the server's to read (Pillow reads what of it is there; a canvas may not).
    assert parity["handed_to_server"] == ["broken.png", "elongated.png"]
    assert parity["screened"] == sum(row.status == "ok" for row in expected.values()) >= 8
    # The pictures are drawn in the browser, from what it kept (each card's, after the summary).
    expect(page.locator('canvas[data-testid="on-device-picture"]').first).to_be_attached(timeout=30_000)
    print(f"on-device parity (synthetic): {parity}; server memory moved {server.resident_mb() - before:+.1f} MB")
    context.close()


@browser_test
def test_a_handed_file_is_uploaded_only_once_the_user_agrees_and_only_once(server, chromium, predictor):
    """A digital X-ray is screened on the device; a photo of a film is handed over. Nothing of either
    leaves before the click; the click sends the photo alone, once, and its row becomes the server's."""
    from dataclasses import replace

    from playwright.sync_api import expect

    from core.analysis.photos import PHOTO, film_photo

    digital = ("chest.png", encode(xray_like(1, True, 256), "PNG"))
    photo = ("film.jpeg", film_photo(xray_like(2, True, 512), replace(PHOTO, keystone=0.12),
                                     np.random.default_rng(0)).data)
    context, page, watched = _ready_screen(chromium, server)
    rows = _screen_on_device(page, [digital, photo])
    assert rows[1]["message"].startswith("not screened on this device"), rows
    note = page.get_by_test_id("on-device-handed-note")
    expect(note).to_contain_text("Not screened on this device: film.jpeg (", timeout=60_000)
    upload = page.get_by_test_id("on-device-upload-handed")
    expect(upload).to_have_text("Upload this file to the server to screen it there")
    _assert_no_slice_sent([digital, photo], watched)

    upload.click()
    expect(page.get_by_text("Photo of a film, straightened", exact=True)).to_be_visible(timeout=120_000)
    expect(page.get_by_text("As sent", exact=True)).to_be_visible()
    expect(upload).to_be_hidden()
    frames = b"".join(watched["frames"])
    assert all(encoded in frames for _, encoded in _slices(photo[1]))
    assert not any(piece in frames or encoded in frames for piece, encoded in _slices(digital[1]))
    after = {row["file"]: row for row in _results_csv(page)}
    expected = server_rows(predictor, [photo])["film.jpeg"]
    assert (after["film.jpeg"]["status"], after["film.jpeg"]["input_kind"]) == ("ok", "photo") == (
        expected.status, expected.input_kind)
    assert abs(float(after["film.jpeg"]["probability"]) - expected.probability) <= 1e-6
    assert after["chest.png"]["status"] == rows[0]["status"] == "ok"

    # A trigger is not kept in the widget state: a later run sends no slice of the photo again.
    watched["frames"].clear()
    watched["requests"].clear()
    page.get_by_text("Settings").first.click()
    page.get_by_text("balanced", exact=True).click()
    expect(page.get_by_text("balanced threshold").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Photo of a film, straightened", exact=True)).to_be_visible()
    _assert_no_slice_sent([digital, photo], watched)
    context.close()


@browser_test
def test_large_and_turned_jpegs_are_screened_on_the_device_as_on_the_server(server, chromium, predictor):
    files = large_and_turned_jpegs()
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{server.url}/screen")
    assert _wait_ready(page)["phase"] == "ready"
    rows = _screen_on_device(page, files)
    expected = server_rows(predictor, files)
    parity = _assert_parity(rows, expected)
    # Every one is screened here, as on the server: none handed over, none refused.
    assert parity["handed_to_server"] == [] and parity["screened"] == len(files), (parity, rows)
    print(f"on-device parity (large and turned JPEGs): {parity}")
    context.close()


@browser_test
@requires_real_data
def test_on_device_matches_the_server_on_real_xrays(server, chromium, predictor):
    from core.analysis.data import resolve_root

    folder = resolve_root(real_data_dir()) / "train"
    paths = sorted(folder.glob("NORMAL/*.jpeg"))[::7][:REAL_PARITY_FILES // 2]
    paths += sorted(folder.glob("PNEUMONIA/*.jpeg"))[::19][:REAL_PARITY_FILES - len(paths)]
    files = [(path.name, path.read_bytes()) for path in paths]
    assert len(files) == REAL_PARITY_FILES, folder
    # And some as a clinic's JPEGs come, large: Pillow decodes them at 1/2 to 1/8 scale.
    for index, path in enumerate(paths[::10]):
        side = (1024, 1536, 2048)[index % 3]
        pixels = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (side, side), interpolation=cv2.INTER_CUBIC)
        files.append((f"large-{side}-{path.name}", encode(pixels, quality=92)))
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{server.url}/screen")
    _wait_ready(page)
    started = time.monotonic()
    rows = _screen_on_device(page, files)
    seconds = time.monotonic() - started
    parity = _assert_parity(rows, server_rows(predictor, files))
    print(f"on-device parity ({len(files)} real X-rays): {parity}; {1000 * seconds / len(files):.0f} ms a file "
          "in the browser, page included")
    assert parity["screened"] >= 0.95 * len(files)
    context.close()


@browser_test
def test_a_second_visit_takes_the_model_from_the_browsers_cache(server, chromium):
    context = chromium.new_context()
    first = context.new_page()
    started = time.monotonic()
    first.goto(f"{server.url}/screen")
    report = _wait_ready(first)
    first_s = time.monotonic() - started
    assert report["phase"] == "ready" and report["downloaded"] > 1_000_000
    # A file kept by an earlier version (npm's single opencv.js, say): gone once the next start is ready.
    stale = f"{server.url}/cxr-on-device/sha256/{'0' * 64}"
    first.evaluate("url => caches.open('cxr-on-device-v1').then((cache) => cache.put(url, new Response('old')))", stale)
    first.close()
    second = context.new_page()
    watched = _watch(second)
    started = time.monotonic()
    second.goto(f"{server.url}/screen")
    report = _wait_ready(second)
    second_s = time.monotonic() - started
    assert report["phase"] == "ready" and report["downloaded"] == 0
    # What the server sent the second time is the page, not the 4.7 MB of model files, and the 28 MB of
    # libraries came from Cache Storage too (Streamlit's asset headers would have them fetched again).
    assert watched["received_bytes"] < 1_500_000
    assert not [url for url in watched["requests"] if url.endswith(("opencv-glue.js", ".wasm"))], watched["requests"]
    kept = "() => caches.open('cxr-on-device-v1').then((cache) => cache.keys()).then((keys) => keys.map((k) => k.url))"
    deadline = time.monotonic() + 15
    while stale in second.evaluate(kept) and time.monotonic() < deadline:  # removed after the start, unawaited
        time.sleep(0.1)
    assert stale not in second.evaluate(kept)
    # What is used stays: onnxruntime's wasm, OpenCV.js's two parts, libjpeg's wasm, model, localiser, check.
    assert len(second.evaluate(kept)) == 7
    print(f"first visit to ready {first_s:.1f} s, second {second_s:.1f} s")
    context.close()


@browser_test
@pytest.mark.parametrize("fault, reason", [
    ("delete window.WebAssembly;", "this browser has no WebAssembly"),
    ("probe", "the self-test gave another answer"),
    ("library", "it could not start here (the opencv-js/opencv-glue.js received has sha256"),
])
def test_a_failed_self_test_turns_on_device_screening_off_with_its_reason(server, chromium, fault, reason):
    from playwright.sync_api import expect

    context = chromium.new_context()
    page = context.new_page()
    if fault == "probe":
        probe = json.loads((FRONTEND / "probe.json").read_text())
        probe["expected"]["raw"] = 0.5
        page.route("**/probe.json", lambda route: route.fulfill(body=json.dumps(probe),
                                                                content_type="application/json"))
    elif fault == "library":  # not the pinned file: refused before it runs
        page.route("**/opencv-glue.js", lambda route: route.fulfill(body="window.cv = {};",
                                                               content_type="text/javascript"))
    else:
        page.add_init_script(fault)
    page.goto(f"{server.url}/screen")
    assert _wait_ready(page)["phase"] == "off"
    expect(page.get_by_text(f"not available in this browser: {reason}").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Screen on this device: nothing is uploaded")).to_have_count(0)
    expect(page.get_by_text("Upload to the server")).to_be_visible()
    expect(page.get_by_test_id("stFileUploaderDropzoneInput")).to_be_attached(timeout=60_000)
    context.close()
