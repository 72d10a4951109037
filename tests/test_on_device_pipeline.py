"""The browser pipeline's reading of files (components/on_device/.../frontend/pipeline.js), under node, against
what Pillow and the server read: EXIF in either byte order, stray bytes between JPEG segments, EXIF and XMP
orientation, the turns of exif_transpose, white balance, and the PNGs and sizes the browser hands to the
server or refuses as the server does."""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest
from conftest import OPENCV_IN_NODE, ROOT, xray_like
from PIL import Image, ImageOps

from core.serving import photo

FRONTEND = ROOT / "components" / "on_device" / "streamlit_cxr_on_device" / "frontend"
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")

MAKE, ORIENTATION = 0x010F, 0x0112


def _node(tmp_path, body: str) -> dict:
    """Run `body` (an async function's body, with P the pipeline module) under node; its returned value."""
    script = f"""
const {{ pathToFileURL }} = require("url");
const fs = require("fs");
(async () => {{
  const P = await import(pathToFileURL({json.dumps(str(FRONTEND / "pipeline.js"))}));
  const result = await (async () => {{ {body} }})();
  console.log(JSON.stringify(result));
}})();
"""
    (tmp_path / "run.js").write_text(script)
    done = subprocess.run(["node", "run.js"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _headers(tmp_path, files: dict[str, bytes]) -> dict:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return _node(tmp_path, f"""
const out = {{}};
for (const name of {json.dumps(list(files))}) {{
  const bytes = new Uint8Array(fs.readFileSync(name));
  out[name] = P.sniff(bytes) === "PNG" ? P.pngHeader(bytes) : P.jpegHeader(bytes);
}}
return out;""")


def _screened(tmp_path, files: dict[str, bytes], **constants) -> dict[str, tuple[str, str]]:
    """(status, code) of P.screen for each file, with OpenCV.js and the JPEG decoder loaded as in the page;
    for files it hands over or refuses before the X-ray check (which needs the model files)."""
    from ui import on_device

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    codes = _node(tmp_path, f"""
{OPENCV_IN_NODE}
await (await import(pathToFileURL({json.dumps(str(FRONTEND / "jpeg.js"))}))).loadJpeg();
const context = {{ cv: new P.Cv(cv), constants: {json.dumps({**on_device.constants(), **constants})} }};
const out = {{}};
for (const name of {json.dumps(list(files))}) {{
  const row = await P.screen(new Uint8Array(fs.readFileSync(name)), context);
  out[name] = [row.status, row.code];
}}
return out;""")
    return {name: tuple(code) for name, code in codes.items()}


def _jpeg(exif: Image.Exif | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    picture = xray_like(3, True, 64)[:, 8:]  # 56x64: a turn shows in the size
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, "JPEG", **({"exif": exif} if exif else {}), **options)
    return buffer.getvalue()


def _exif(endian: str, tags: dict[int, object]) -> Image.Exif:
    exif = Image.Exif()
    exif.endian = endian
    for tag, value in tags.items():
        exif[tag] = value
    return exif


def test_exif_is_read_in_either_byte_order_as_pillow_reads_it(tmp_path):
    files = {f"{name}.jpeg": _jpeg(_exif(endian, {MAKE: "PhoneMaker", ORIENTATION: 6}))
             for name, endian in (("intel", "<"), ("motorola", ">"))}
    for data in files.values():  # what the server sees: a camera's make, and the turn
        exif = Image.open(io.BytesIO(data)).getexif()
        assert exif[MAKE] == "PhoneMaker" and exif[ORIENTATION] == 6
    for name, header in _headers(tmp_path, files).items():
        assert header["orientation"] == 6, name
    # A camera's photo, whatever the byte order: handed to the server's film finder.
    assert set(_screened(tmp_path, files).values()) == {("server", "camera")}
    # And every JPEG, where the server's Pillow decodes with another libjpeg-turbo than the browser's.
    assert set(_screened(tmp_path, files, LIBJPEG_TURBO="3.1.0").values()) == {("server", "jpeg_version")}


def test_stray_bytes_between_segments_are_skipped_and_the_last_xmp_counts(tmp_path):
    plain = _jpeg()
    strayed = plain[:20] + b"\x00\x00" + plain[20:]  # after APP0, as some writers leave them
    stuffed = plain[:20] + b"\xff\x00" + plain[20:]
    for data in (strayed, stuffed):
        Image.open(io.BytesIO(data)).load()  # Pillow reads them
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description tiff:Orientation=\"%d\"/></x:xmpmeta>"
    segments = b"".join(b"\xff\xe1" + (len(xmp % n) + 2).to_bytes(2, "big") + xmp % n for n in (3, 8))
    two_xmps = plain[:2] + segments + plain[2:]
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(two_xmps))).size == (64, 56)  # turned by the last
    assert Image.open(io.BytesIO(two_xmps)).getexif()[ORIENTATION] == 8
    signed = _jpeg(_exif(">", {ORIENTATION: 6}))
    signed = signed.replace(b"\x01\x12\x00\x03", b"\x01\x12\x00\x08", 1)  # the same 6 as an SSHORT
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(signed))).size == (64, 56)
    headers = _headers(tmp_path, {"strayed.jpeg": strayed, "stuffed.jpeg": stuffed, "two_xmps.jpeg": two_xmps,
                                  "signed.jpeg": signed})
    for name in ("strayed.jpeg", "stuffed.jpeg"):
        assert (headers[name]["width"], headers[name]["height"]) == (56, 64), name
    assert headers["two_xmps.jpeg"]["orientation"] == 8 and headers["signed.jpeg"]["orientation"] == 6


def test_every_turn_is_exif_transposes(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    turned = _node(tmp_path, f"""
const picture = {{ pixels: new Uint8Array({json.dumps(rgb.ravel().tolist())}), width: 7, height: 5, channels: 3 }};
const out = {{}};
for (let orientation = 1; orientation <= 8; orientation++) {{
  const t = P.transposed(picture, orientation);
  out[orientation] = {{ pixels: Array.from(t.pixels), width: t.width, height: t.height }};
}}
return out;""")
    for orientation in range(1, 9):
        image = Image.fromarray(rgb)
        exif = image.getexif()
        exif[ORIENTATION] = orientation
        buffer = io.BytesIO()
        image.save(buffer, "PNG", exif=exif)
        want = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))
        got = turned[str(orientation)]
        assert (got["height"], got["width"]) == want.shape[:2], orientation
        assert np.array_equal(np.array(got["pixels"], np.uint8).reshape(want.shape), want), orientation


def test_white_balance_is_the_servers_to_the_grey_level(tmp_path):
    """A tinted picture large enough that float32 sums lose digits: the server's NumPy sums them in
    float32, row after row, and so must the browser."""
    gray = xray_like(8, True, 511).astype(np.float32)
    tinted = np.uint8(np.clip(np.stack([gray * 1.04 + 3, gray, gray * 0.93], axis=-1), 0, 255))
    (tmp_path / "tinted.rgb").write_bytes(tinted.tobytes())
    got = _node(tmp_path, f"""
const pixels = new Uint8Array(fs.readFileSync("tinted.rgb"));
return Array.from(P.whiteBalanced({{ pixels, width: 511, height: 511, channels: 3 }}, {photo.SATURATED}).pixels);
""")
    assert np.array_equal(np.array(got, np.uint8).reshape(tinted.shape), photo.white_balanced(tinted))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def test_pngs_the_canvas_would_misread_go_to_the_server_and_bombs_are_refused(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(xray_like(4, False, 64)).save(buffer, "PNG")
    plain = buffer.getvalue()
    end = plain.rindex(b"IEND") - 4
    packet = b"<x:xmpmeta><rdf:Description tiff:Orientation=\"3\"/></x:xmpmeta>"
    xmp = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet
    compressed_xmp = b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(packet)
    transparent = io.BytesIO()
    Image.fromarray(xray_like(4, False, 64)).save(transparent, "PNG", transparency=40)
    ihdr = plain[:33]
    huge = ihdr[:16] + (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big") + ihdr[24:29]
    huge += zlib.crc32(huge[12:29]).to_bytes(4, "big") + plain[33:]
    files = {
        "xmp.png": plain[:end] + _png_chunk(b"iTXt", xmp) + plain[end:],
        "compressed_xmp.png": plain[:end] + _png_chunk(b"iTXt", compressed_xmp) + plain[end:],
        "transparent.png": transparent.getvalue(),
        "cut_short.png": plain[:end],
        "huge.png": huge,
    }
    for name in ("xmp.png", "compressed_xmp.png"):  # the server turns them
        assert ImageOps.exif_transpose(Image.open(io.BytesIO(files[name]))).getpixel((0, 0)) != \
            Image.open(io.BytesIO(plain)).getpixel((0, 0)), name
    assert _screened(tmp_path, files) == {
        "xmp.png": ("server", "png_exif"), "compressed_xmp.png": ("server", "png_exif"),
        "transparent.png": ("server", "png_transparency"),
        "cut_short.png": ("server", "png_cut_short"), "huge.png": ("error", "decompression_bomb")}


def test_the_browsers_libjpeg_turbo_is_the_one_built_into_its_wasm():
    """jpeg.js names the version the server's must match; build.py names the one it compiles."""
    build = (ROOT / "components" / "on_device" / "jpeg_wasm" / "build.py").read_text()
    built = re.search(r'^VERSION = "([\d.]+)"', build, re.MULTILINE)[1]
    named = re.search(r'export const LIBJPEG_TURBO = "([\d.]+)"', (FRONTEND / "jpeg.js").read_text())[1]
    assert built == named
