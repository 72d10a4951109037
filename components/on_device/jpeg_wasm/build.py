"""Build libjpeg-turbo to WebAssembly for the browser's large-JPEG decode (frontend/jpeg.js).

    python3 components/on_device/jpeg_wasm/build.py --source PATH   # then pin the printed sha256 in vendor.py

PATH is a libjpeg-turbo git clone (the pinned commit is archived from it) or the tar of that archive.
The tar `git archive --format=tar --prefix=libjpeg-turbo-3.2.0/ 3.2.0` must have SOURCE_SHA256
(git 2.39.5 made the pinned one); GitHub's release tarballs are other bytes of the same files.

Why this version and these settings:
- libjpeg-turbo 3.2.0 (commit COMMIT, tag 3.2.0): the version Pillow 13.0.0's wheels bundle
  (PIL.features.version("libjpeg_turbo")), with its default options, as those wheels build it:
  libjpeg API v6.2 (not WITH_JPEG7/8, which change how scaled sizes are chosen), arithmetic decoding.
- No SIMD: the wasm runs the C IDCTs, colour conversion and upsampling; tests/test_on_device_jpeg.py
  checks that they give the pixels of Pillow's SIMD build, bit for bit.
- Debian bookworm's clang 14.0.6, wasm-ld 14.0.6 and wasi-libc 0.0~git20220510.9886d3d-2 (for
  memcpy, memset and the like only), packages clang, lld, wasi-libc; cmake 3.25.1. Emscripten is
  not needed: decode.c imports nothing (its own arena and a trap for libjpeg's errors), so the
  module is instantiated with no runtime, in a browser or node.
- NO_GETENV: libjpeg's JPEGMEM variable would link WASI's environment calls, the module's only imports.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE.parent / "streamlit_cxr_on_device" / "frontend" / "vendor" / "libjpeg-turbo"
VERSION = "3.2.0"
COMMIT = "c85e6b905bf237038faa936dab160ebfc5da0344"
SOURCE_SHA256 = "4ac3879e40faa8734b749cd5ba608f38489e8ecea754e742efc429bffeb2862a"
WASI_SYSROOT = Path("/usr/include/wasm32-wasi"), Path("/usr/lib/wasm32-wasi")  # Debian's wasi-libc
# -O2: the decode's speed matters more than the bytes -Oz saves.
CFLAGS = "-O2 -DNDEBUG -DNO_GETENV"
CMAKE_OPTIONS = ["-DENABLE_SHARED=0", "-DWITH_SIMD=0", "-DWITH_TURBOJPEG=0", "-DWITH_TOOLS=0", "-DWITH_TESTS=0",
                 "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_C_FLAGS_RELEASE={CFLAGS}"]
# The C stack first, so an overflow traps below address 0 instead of running into libjpeg's data.
LINK_OPTIONS = ["-nostartfiles", "-Wl,--no-entry", "-Wl,--stack-first", "-Wl,-z,stack-size=262144",
                "-Wl,--strip-all", "-Wl,--gc-sections"]
TOOLCHAIN = """set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR wasm32)
set(CMAKE_C_COMPILER clang)
set(CMAKE_C_COMPILER_TARGET wasm32-wasi)
set(CMAKE_SYSROOT {sysroot})
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
"""


def source_tar(source: Path) -> bytes:
    if (source / ".git").exists() or (source / "HEAD").exists():  # a clone or a bare mirror
        return subprocess.run(["git", "--git-dir", str(source / ".git") if (source / ".git").exists() else str(source),
                               "archive", "--format=tar", f"--prefix=libjpeg-turbo-{VERSION}/", COMMIT],
                              check=True, capture_output=True).stdout
    return source.read_bytes()


def sysroot(work: Path) -> Path:
    """Debian splits wasi-libc into /usr/include/wasm32-wasi and /usr/lib/wasm32-wasi; a sysroot of
    links to just those keeps the host's /usr/include out of the build."""
    root = work / "sysroot"
    (root / "lib").mkdir(parents=True)
    (root / "include").symlink_to(WASI_SYSROOT[0])
    (root / "lib" / "wasm32-wasi").symlink_to(WASI_SYSROOT[1])
    return root


def imports_anything(wasm: bytes) -> bool:
    """Whether the module has an import section (id 2); wasm-ld writes none when nothing is imported."""
    at = 8
    while at < len(wasm):
        section, at = wasm[at], at + 1
        size, shift = 0, 0
        while True:  # the section's size, LEB128
            byte, at = wasm[at], at + 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if section == 2:
            return True
        at += size
    return False


def build(source: Path, work: Path) -> bytes:
    tar = source_tar(source)
    digest = hashlib.sha256(tar).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"source tar sha256 {digest}, pinned {SOURCE_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(work, filter="data")
    tree = work / f"libjpeg-turbo-{VERSION}"
    root = sysroot(work)
    (work / "toolchain.cmake").write_text(TOOLCHAIN.format(sysroot=root))
    objects = work / "cmake"
    subprocess.run(["cmake", "-S", str(tree), "-B", str(objects), f"-DCMAKE_TOOLCHAIN_FILE={work / 'toolchain.cmake'}",
                    *CMAKE_OPTIONS], check=True, stdout=subprocess.DEVNULL)
    # Two jobs: the machine's cores are shared.
    subprocess.run(["cmake", "--build", str(objects), "--target", "jpeg-static", "-j", "2"], check=True,
                   stdout=subprocess.DEVNULL)
    wasm = work / "jpeg.wasm"
    subprocess.run(["clang", "--target=wasm32-wasi", f"--sysroot={root}", *CFLAGS.split(),
                    "-I", str(tree / "src"), "-I", str(objects), str(HERE / "decode.c"), str(objects / "libjpeg.a"),
                    *LINK_OPTIONS, "-o", str(wasm)], check=True)
    built = wasm.read_bytes()
    if imports_anything(built):
        raise SystemExit("the module imports something: it must run with no runtime")
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name in ("LICENSE.md", "README.ijg"):
        shutil.copyfile(tree / name, VENDOR / name)
    (VENDOR / "jpeg.wasm").write_bytes(built)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="libjpeg-turbo clone, bare mirror or tar")
    parser.add_argument("--work", type=Path, help="keep the build here (default: a temporary folder)")
    args = parser.parse_args()
    for tool in ("clang", "wasm-ld", "cmake"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: apt-get install clang lld wasi-libc cmake)")
    if args.work:
        args.work.mkdir(parents=True)
        built = build(args.source, args.work)
    else:
        with tempfile.TemporaryDirectory() as work:
            built = build(args.source, Path(work))
    print(f"{VENDOR / 'jpeg.wasm'}: {len(built)} bytes, sha256 {hashlib.sha256(built).hexdigest()}")
    for name in ("LICENSE.md", "README.ijg"):
        print(f"{VENDOR / name}: sha256 {hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()}")


if __name__ == "__main__":
    sys.exit(main())
