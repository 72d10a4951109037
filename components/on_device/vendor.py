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
- @techstark/opencv-js 5.0.0-release.1: OpenCV 5.0 compiled to WebAssembly (one file, the wasm
  inlined), the same library as the server's opencv-python-headless, so resizes and CLAHE give the
  same pixels (tested bit for bit in tests/test_on_device.py).
"""
from __future__ import annotations

import hashlib
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
}
# onnxruntime-web's npm package names its licence (MIT) in package.json but ships no LICENSE file:
# vendor/onnxruntime-web/LICENSE is the upstream repository's text, committed by hand.


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_files() -> dict[str, str]:
    """sha256 of each vendored file, by its path under VENDOR: the browser checks what it loads against them."""
    return {target: expected for files in PINNED.values() for target, expected in files.values()}


def mismatches() -> list[str]:
    """Each committed vendor file that is missing or whose hash is not the pinned one."""
    wrong = []
    for files in PINNED.values():
        for target, expected in files.values():
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
                    shutil.copyfile(extracted, VENDOR / target)
            tarball.unlink()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "fetch":
        fetch()
    wrong = mismatches()
    print("\n".join(wrong) or "vendor files match their pinned sha256")
    sys.exit(1 if wrong else 0)
