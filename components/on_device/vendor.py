"""The browser libraries the on-device component ships, pinned by version and sha256.

They are committed as files (streamlit_cxr_on_device/frontend/vendor/), fetched from the npm registry once by a
developer with this script, never at run time: a clinic's browser gets them from the dashboard itself.

    python3 components/on_device/vendor.py check   # the committed files have the pinned hashes
    python3 components/on_device/vendor.py fetch   # `npm pack` each package again, check, copy

Why these versions:
- onnxruntime-web 1.31.1: the newest release on npm when pinned (2026-12-06). The shipped models
  use ONNX opset 15 (ai.onnx.ml 2), which it and the Python onnxruntime (>= 1.20) both run; the
  on-device tests check that both give the same probabilities. Only the single-thread-capable SIMD
  build is shipped (Streamlit sends no COOP/COEP headers, so no threads), with its ES-module bundle.
- @techstark/opencv-js 5.0.0-release.1: OpenCV 5.0 compiled to WebAssembly, the same library as the
  server's opencv-python-headless, so resizes and CLAHE give the same pixels (tested bit for bit in
  tests/test_on_device.py). Its opencv.js inlines the wasm as one 13 MB string literal, which a browser
  parses and decodes on every visit (0.45 s alone, 0.66-0.93 s beside the rest of the start). `fetch`
  splits it, as split_opencv_js says, into the wasm (compiled lazily from bytes: 0.1 s alone) and the
  rest of the script; only those two are committed, each pinned. The npm file stays pinned as fetched.
- dicom-parser 1.8.21 (cornerstonejs, MIT; its bundle's banner says 1.8.12, a stale header) and
  jpeg-lossless-decoder-js 2.1.2 (rii-mango, MIT): the newest releases when pinned (2026-12-07), loaded
  only when a DICOM is met (47 KB). The DICOM pixels they give are tested equal to pydicom's in
  tests/test_on_device_dicom.py. RLE has no small maintained package (cornerstone's decoder, inside its
  image loader, does not check segment lengths as pydicom does): frontend/dicom.js decodes it.
- libjpeg-turbo 3.2.0, built here, not fetched from npm (no package exposes its scaled decoding):
  jpeg_wasm/build.py compiles it to WebAssembly (its source commit and sha256, compiler and flags are
  there) with decode.c, for frontend/jpeg.js, which decodes a large JPEG as Pillow's draft does;
  tests/test_on_device_jpeg.py checks it bit for bit. `fetch` leaves these files alone: run build.py.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "streamlit_cxr_on_device" / "frontend" / "vendor"

# package@version -> {path inside the npm tarball: (path under VENDOR, sha256)}
PINNED: dict[str, dict[str, tuple[str, str]]] = {
    "onnxruntime-web@1.31.1": {
        "package/dist/ort.wasm.bundle.min.mjs": (
            "onnxruntime-web/ort.wasm.bundle.min.mjs",
            "51bd7168175767324ab0acfcfc4ca94a096a3826e3ebac9ccc4f195eb865f8dd"),
        "package/dist/ort-wasm-simd-threaded.wasm": (
            "onnxruntime-web/ort-wasm-simd-threaded.wasm",
            "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d"),
    },
    "@techstark/opencv-js@5.0.0-release.1": {
        "package/dist/opencv.js": (
            "opencv-js/opencv.js", "b873c8211421da7b9bf41ae157a923f05a46a0b8d3e5904c44c6f3ad6d39a1bd"),
        "package/LICENSE": (
            "opencv-js/LICENSE", "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
    },
    "dicom-parser@1.8.21": {
        "package/dist/dicomParser.min.js": (
            "dicom-parser/dicomParser.min.js", "2b990e92de021a9c0d58f7dca693c95fa76be6398648b68441df9423de284a2b"),
        "package/LICENSE": (
            "dicom-parser/LICENSE", "01323491c1f1f1f8f738fa558e96ab0b07f1ca9ba70c79675e0a4beb41f156c1"),
    },
    "jpeg-lossless-decoder-js@2.1.2": {
        "package/release/lossless-min.js": (
            "jpeg-lossless-decoder-js/lossless-min.js",
            "7a50162e3ce1f1e45c6d45161918281f34079a223cc7329518a2aa89390e9658"),
        "package/LICENSE": (
            "jpeg-lossless-decoder-js/LICENSE", "35d89c5827cb1f9685ffc3fb6ebcc9532f75663554ed6efddadad95071bae5c9"),
    },
}
# Split from the pinned opencv.js by split_opencv_js: path under VENDOR -> sha256.
OPENCV_JS = "opencv-js/opencv.js"
SPLIT: dict[str, str] = {
    "opencv-js/opencv.wasm": "769a4c9a7b03cba7bf22229154c1208087035a533347364e6d9a4d47cad2dbed",
    "opencv-js/opencv-glue.js": "0e7a6f54da568f422ce00309cb83f49354e30e9f4f79f876cfc618fe1c45f34f",
}
# Built by jpeg_wasm/build.py, not npm-fetched: path under VENDOR -> sha256.
BUILT: dict[str, str] = {
    "libjpeg-turbo/jpeg.wasm": "bbf53f37b3b1c449c4755f384daa16023e92901f67b443f5e8b552f89864ac8f",
    "libjpeg-turbo/LICENSE.md": "ba6bceebcba0fdd35488477c2cca8c4632ce82c74dbfbc87d886ce6fc4433579",
    "libjpeg-turbo/README.ijg": "75815e3bf6484201a3c3d17a1bbf10f2e8e3237f84df10a2357ea896db2a81d6",
}
# The Emscripten builds (onnxruntime-web's bundle, OpenCV.js) name an absolute HOME: the home folder of
# Emscripten's in-memory file system in the browser, no path of any machine. They stay byte for byte as pinned.
# onnxruntime-web's npm package names its licence (MIT) in package.json but ships no LICENSE file:
# vendor/onnxruntime-web/LICENSE is the upstream repository's text, committed by hand.


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_files() -> dict[str, str]:
    """sha256 of each committed vendor file, by its path under VENDOR: the browser checks what it loads against them."""
    fetched = {target: expected for files in PINNED.values() for target, expected in files.values()}
    del fetched[OPENCV_JS]  # committed as its two parts
    return {**fetched, **SPLIT, **BUILT}


def split_opencv_js(script: bytes) -> dict[str, bytes]:
    """The SPLIT files' bytes: Emscripten's SINGLE_FILE opencv.js as its script without the inlined wasm, and the wasm.

    The build writes the wasm as `binaryDecode('...')`: a latin-1 string (each char a byte, UTF-8 in the
    file) with four escapes. The glue keeps the call with an empty string, never reached, since the loader
    (frontend/opencv.js) gives `instantiateWasm`; for that the UMD wrapper returns Emscripten's factory
    instead of calling it with no arguments. Anything else in the file refuses the split."""
    start_marker, end_marker = b"return binaryDecode('", b"')}function getBinarySync"
    factory_call = b"return cv(Module);"
    for marker in (start_marker, end_marker, factory_call):
        if script.count(marker) != 1:
            raise SystemExit(f"{OPENCV_JS}: expected {marker!r} once, found it {script.count(marker)} times")
    start, end = script.index(start_marker) + len(start_marker), script.index(end_marker)
    escapes = {"r": "\r", "n": "\n", "\\": "\\", "'": "'"}
    try:
        literal = script[start:end].decode("utf-8")
        unknown = set(re.findall(r"\\(.)", literal, flags=re.DOTALL)) - set(escapes)
        if unknown:
            raise SystemExit(f"{OPENCV_JS}: the inlined wasm has escapes this split does not know: {sorted(unknown)}")
        wasm = re.sub(r"\\(.)", lambda found: escapes[found.group(1)], literal, flags=re.DOTALL).encode("latin-1")
    except UnicodeError as exc:  # not UTF-8, or a char past 255: not a string of bytes
        raise SystemExit(f"{OPENCV_JS}: the inlined string is not one char per byte ({exc})") from None
    if not wasm.startswith(b"\0asm"):
        raise SystemExit(f"{OPENCV_JS}: the inlined string is not a wasm module")
    glue = (script[:start] + script[end:]).replace(factory_call, b"return cv;")
    return {"opencv-js/opencv.wasm": wasm, "opencv-js/opencv-glue.js": glue}


def mismatches() -> list[str]:
    """Each committed vendor file that is missing or whose hash is not the pinned one."""
    wrong = []
    for target, expected in pinned_files().items():
        path = VENDOR / target
        if not path.exists():
            wrong.append(f"{target}: missing")
        elif sha256_of(path) != expected:
            wrong.append(f"{target}: sha256 {sha256_of(path)}, pinned {expected}")
    return wrong


def fetch() -> None:
    """npm pack each pinned package, refuse any file whose hash differs, copy the rest into VENDOR."""
    with tempfile.TemporaryDirectory() as scratch:
        for spec, files in PINNED.items():
            subprocess.run(["npm", "pack", spec, "--silent"], cwd=scratch, check=True, stdout=subprocess.DEVNULL)
            tarball = next(Path(scratch).glob("*.tgz"))
            with tarfile.open(tarball) as archive:
                for inside, (target, expected) in files.items():
                    extracted = Path(scratch) / "x" / inside
                    archive.extract(inside, Path(scratch) / "x", filter="data")
                    if sha256_of(extracted) != expected:
                        raise SystemExit(f"{spec} {inside}: sha256 {sha256_of(extracted)}, pinned {expected}")
                    (VENDOR / target).parent.mkdir(parents=True, exist_ok=True)
                    if target == OPENCV_JS:
                        for part, data in split_opencv_js(extracted.read_bytes()).items():
                            (VENDOR / part).write_bytes(data)
                    else:
                        shutil.copyfile(extracted, VENDOR / target)
            tarball.unlink()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "fetch":
        fetch()
    wrong = mismatches()
    print("\n".join(wrong) or "vendor files match their pinned sha256")
    sys.exit(1 if wrong else 0)
