"""The browser's JPEG decode (components/on_device/.../frontend/jpeg.js, libjpeg-turbo in WebAssembly), under
node, against the server's: Pillow's draft(mode, (side, side)) then load(), as core.serving.imaging._open_raster
decodes, bit for bit, at the sides the server decodes at; and bad files refused, never a crash."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from conftest import ROOT, real_data_dir
from PIL import Image, UnidentifiedImageError

from core.analysis.synthetic import chest_xray
from core.serving.imaging import DECODE_SIDE

FRONTEND = ROOT / "components" / "on_device" / "streamlit_cxr_on_device" / "frontend"
WASM = FRONTEND / "vendor" / "libjpeg-turbo" / "jpeg.wasm"
# DECODE_SIDE, and the film-share re-decode's round(DECODE_SIDE / film_share) for films filling 3/4 down to
# 3/20 of a photo's shorter side: together every scale (1, 1/2, 1/4, 1/8) of the sizes below.
SIDES = [DECODE_SIDE] + [round(DECODE_SIDE / share) for share in (0.75, 0.5, 0.3, 0.15)]
REAL_FILES = 300
ERROR_CODES = {"truncated", "corrupt", "unsupported"}

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")

RUNNER = """
import { readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
const { loadJpeg, decodeJpeg, draftDenominator } = await import(process.argv[2]);
const wasm = new WebAssembly.Module(readFileSync(process.argv[3]));
const cases = JSON.parse(readFileSync("cases.json"));
await loadJpeg();
const results = [];
for (const { file, mode, side, size } of cases) {
  try {
    const got = await decodeJpeg(readFileSync(file), { mode, side });
    results.push({ width: got.width, height: got.height, channels: got.channels,
                   sha256: createHash("sha256").update(got.pixels).digest("hex"),
                   draft: size ? draftDenominator(size[0], size[1], side) === got.denominator : null });
  } catch (error) {
    results.push({ error: error.code ?? String(error) });
  }
}
writeFileSync("results.json", JSON.stringify({ imports: WebAssembly.Module.imports(wasm).length, results }));
"""


def pillow(data: bytes, mode: str | None, side: int) -> dict:
    """_open_raster's decode (its EXIF turn aside, the caller's in the browser too): the pixels' size and
    sha256, or where Pillow refuses the file, "open" or "load" (a file that is no JPEG to Pillow: "open")."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return {"error": "open"}
    if image.format != "JPEG":
        return {"error": "open"}
    try:
        image.draft(image.mode if mode is None else mode, (side, side))
        image.load()
    except (OSError, SyntaxError, ValueError):
        return {"error": "load"}
    pixels = np.ascontiguousarray(np.asarray(image))
    return {"width": image.width, "height": image.height, "channels": 1 if pixels.ndim == 2 else pixels.shape[2],
            "sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}


def pillow_jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def cv2_jpeg(pixels: np.ndarray, **options) -> bytes:
    flags = [value for name, setting in options.items() for value in (getattr(cv2, f"IMWRITE_JPEG_{name}"), setting)]
    colour = pixels if pixels.ndim == 2 else pixels[:, :, ::-1]
    return cv2.imencode(".jpg", colour, flags)[1].tobytes()


def picture(kind: str, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    gray = chest_xray(seed, seed % 2 == 1, max(height, width))[:height, :width]
    if kind == "xray":
        return gray
    # Colour with sharp chroma edges, where the chroma upsampling shows.
    tint = np.zeros((height, width, 3))
    tint[: height // 2, : width // 3] = (60, -40, 0)
    tint[height // 3:, width // 2:] = (-30, 20, 70)
    return np.clip(gray[:, :, None] * (0.9, 1.0, 0.8) + tint, 0, 255).astype(np.uint8)


# Encoders and their settings: Pillow's (libjpeg-turbo) and OpenCV's, baseline and progressive, Huffman
# tables optimised or not, restart markers, quality 50-95, and every chroma subsampling they write.
GRAY_ENCODERS = [
    lambda p: pillow_jpeg(p, quality=75),
    lambda p: pillow_jpeg(p, quality=95, progressive=True),
    lambda p: pillow_jpeg(p, quality=50, optimize=True, restart_marker_rows=1),
    lambda p: cv2_jpeg(p, QUALITY=90),
    lambda p: cv2_jpeg(p, QUALITY=60, PROGRESSIVE=1, RST_INTERVAL=5),
]
COLOUR_ENCODERS = [
    lambda p: pillow_jpeg(p, quality=85, subsampling=2),  # 4:2:0
    lambda p: pillow_jpeg(p, quality=70, subsampling=1, progressive=True),  # 4:2:2
    lambda p: pillow_jpeg(p, quality=95, subsampling=0, restart_marker_blocks=7),  # 4:4:4
    lambda p: pillow_jpeg(p, quality=80, keep_rgb=True),  # Adobe RGB, no YCbCr
    lambda p: cv2_jpeg(p, QUALITY=90, SAMPLING_FACTOR=cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440),
    lambda p: cv2_jpeg(p, QUALITY=55, SAMPLING_FACTOR=cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411, PROGRESSIVE=1),
    lambda p: cv2_jpeg(p, QUALITY=75, SAMPLING_FACTOR=cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422, RST_INTERVAL=3),
]
SIZES = [(224, 224), (256, 256), (257, 300), (512, 511), (512, 512), (1025, 513), (1023, 777), (1024, 1024),
         (1500, 1201), (2048, 2048), (2500, 1999), (3000, 3000)]


def with_big_markers(data: bytes) -> bytes:
    """Three full-length APP15 segments after the SOI: the decoder skips past the 64 KB blocks Pillow
    hands it (ImageFile.MAXBLOCK), which jpeg.js's decode reproduces."""
    segment = b"\xff\xef\xff\xff" + bytes(range(256)) * 255 + bytes(253)
    return data[:2] + segment * 3 + data[2:]


def synthetic_jpegs() -> list[tuple[str, bytes]]:
    files = [("markers-gray", with_big_markers(pillow_jpeg(picture("xray", 1024, 1024, 1), quality=80))),
             ("markers-colour", with_big_markers(pillow_jpeg(picture("colour", 900, 1100, 2), progressive=True)))]
    for index, (height, width) in enumerate(SIZES):
        for kind in ("xray", "noise"):
            pixels = picture(kind, height, width, index)
            for number, encoder in enumerate(GRAY_ENCODERS):
                if (index + number) % 2 == 0 or kind == "xray":
                    files.append((f"{kind}{width}x{height}-gray{number}", encoder(pixels)))
        colour = picture("colour", height, width, index)
        for number, encoder in enumerate(COLOUR_ENCODERS):
            files.append((f"colour{width}x{height}-{number}", encoder(colour)))
    return files


def real_jpegs(folder) -> list[tuple[str, bytes]]:
    """Real X-rays (224 px) upscaled to 1024-2048 px and encoded again: grey mostly, some colour."""
    rng = np.random.default_rng(11)
    paths = sorted(folder.rglob("*.jpeg"))
    files = []
    for number, path in enumerate(paths[:: max(1, len(paths) // REAL_FILES)][:REAL_FILES]):
        colour = number % 5 == 0
        image = np.asarray(Image.open(path).convert("RGB" if colour else "L"))
        side = int(rng.integers(1024, 2049))
        size = (side, int(side * rng.uniform(0.8, 1.25)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
        quality, progressive = int(rng.integers(50, 96)), bool(rng.random() < 0.3)
        if number % 2:
            data = pillow_jpeg(image, quality=quality, progressive=progressive)
        else:
            data = cv2_jpeg(image, QUALITY=quality, PROGRESSIVE=int(progressive))
        files.append((f"real{number}", data))
    return files


def damaged(name: str, data: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Cut short anywhere (the header, the scans, just the EOI), bytes flipped, markers lost."""
    cuts = [2, 3, 20, 200, 700, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 2, len(data) - 1]
    files = [(f"{name}-cut{cut}", data[:cut]) for cut in cuts]
    for flip in range(12):
        broken = bytearray(data)
        at = int(rng.integers(2, len(data) // 8 if flip < 6 else len(data)))  # half of them in the headers
        broken[at] ^= 1 << int(rng.integers(0, 8))
        files.append((f"{name}-flip{flip}", bytes(broken)))
    sos = data.index(b"\xff\xda")
    files.append((f"{name}-noscans", data[:sos] + b"\xff\xd9"))
    return files


def run_node(tmp_path, files: list[tuple[str, bytes]], cases: list[dict]) -> dict:
    for number, (_, data) in enumerate(files):
        (tmp_path / f"{number}.jpg").write_bytes(data)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "runner.mjs").write_text(RUNNER)
    subprocess.run(["node", "runner.mjs", (FRONTEND / "jpeg.js").as_uri(), str(WASM)], cwd=tmp_path, check=True,
                   timeout=900)
    return json.loads((tmp_path / "results.json").read_text())


def decode_cases(files: list[tuple[str, bytes]], gray_too: bool = False) -> tuple[list[dict], list[dict]]:
    """Each file at each of SIDES that gives another scale, in its own mode (as the server asks) and, with
    gray_too, a colour file in L as well (draft("L") on RGB): the cases for node, and Pillow's answers."""
    cases, expected = [], []
    for number, (name, data) in enumerate(files):
        image = Image.open(io.BytesIO(data))
        for mode in [image.mode] + (["L"] if gray_too and image.mode == "RGB" else []):
            scales = set()
            for side in SIDES:
                ratio = min(image.width // side, image.height // side)
                scale = next((s for s in (8, 4, 2) if ratio >= s), 1)
                if scale not in scales:
                    scales.add(scale)
                    cases.append({"file": f"{number}.jpg", "mode": mode, "side": side, "size": image.size})
                    expected.append({**pillow(data, mode, side), "name": f"{name} {mode} side {side} (1/{scale})"})
    return cases, expected


def assert_same(expected: list[dict], results: list[dict]) -> None:
    assert len(results) == len(expected)
    wrong = [want["name"] for want, got in zip(expected, results)
             if {k: got.get(k) for k in ("width", "height", "channels", "sha256")} !=
             {k: want[k] for k in ("width", "height", "channels", "sha256")} or got["draft"] is not True]
    assert not wrong, f"{len(wrong)} of {len(expected)} decodes differ from Pillow's: {wrong[:20]}"


def test_synthetic_jpegs_decode_as_pillows_draft(tmp_path):
    """Grey and colour, 224 to 3000 px, odd sizes, every subsampling, baseline and progressive, restart
    markers: every pixel Pillow's, at every scale; colour files asked for L too (draft("L") on RGB)."""
    files = synthetic_jpegs()
    cases, expected = decode_cases(files, gray_too=True)
    got = run_node(tmp_path, files, cases)
    assert got["imports"] == 0  # it runs with no runtime: nothing but WebAssembly itself
    assert_same(expected, got["results"])
    assert len(expected) > 500


@pytest.mark.skipif(real_data_dir() is None, reason="real chest X-ray data not found (../shared/data)")
def test_real_xrays_reencoded_large_decode_as_pillows_draft(tmp_path):
    files = real_jpegs(real_data_dir())
    cases, expected = decode_cases(files)
    assert len(files) == REAL_FILES
    assert_same(expected, run_node(tmp_path, files, cases)["results"])


def test_truncated_and_corrupt_files_give_an_error_code_or_pillows_pixels(tmp_path):
    """Where Pillow decodes a damaged file (libjpeg decodes past corrupt data with a warning; a file whose
    lines are all there but its EOI is not), the same pixels; where Pillow's load refuses it, an error code;
    where Pillow cannot even open it, an error code or pixels, never a crash. Each good file after a bad one
    still decodes (the instance a libjpeg error trapped in is replaced)."""
    rng = np.random.default_rng(5)
    gray = picture("xray", 1024, 1024, 3)
    bases = [("baseline", pillow_jpeg(gray, quality=80)),
             ("progressive", pillow_jpeg(picture("colour", 777, 1023, 4), quality=90, progressive=True)),
             ("restarts", cv2_jpeg(gray, QUALITY=70, RST_INTERVAL=4))]
    files = [("empty", b""), ("noise", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()),
             ("soi-then-noise", b"\xff\xd8\xff" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()),
             ("png", cv2.imencode(".png", gray)[1].tobytes())]
    for name, data in bases:
        files += damaged(name, data, rng) + [(name, data)]
    cases, expected = [], []
    for number, (name, data) in enumerate(files):
        want = pillow(data, None, DECODE_SIDE)
        mode = "RGB" if name.startswith("progressive") else "L"
        cases.append({"file": f"{number}.jpg", "mode": mode, "side": DECODE_SIDE, "size": None})
        expected.append({**want, "name": name})
    results = run_node(tmp_path, files, cases)["results"]
    wrong = []
    for want, got in zip(expected, results, strict=True):
        if "error" in got and got["error"] not in ERROR_CODES:
            wrong.append(f"{want['name']}: {got['error']}")
        elif want.get("error") == "load" and "error" not in got:
            wrong.append(f"{want['name']}: decoded where Pillow refuses it")
        elif "error" not in want and got.get("sha256") != want["sha256"]:
            wrong.append(f"{want['name']}: {got.get('error', 'other pixels')} where Pillow decodes it")
    assert not wrong, wrong
    assert sum("error" in got for got in results) >= 20
    assert all("sha256" in results[files.index((name, data))] for name, data in bases)
