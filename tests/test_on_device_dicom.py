"""DICOM screened on the device (issue #39): frontend/dicom.js under node gives the server's pixels
(core.serving.dicom.decode_dicom then imaging.to_uint8) for every phase-one transfer syntax and its
refusals' reasons; in headless Chromium, DICOMs get the server path's rows and no byte of them leaves."""
from __future__ import annotations

import io
import json
import shutil
import subprocess

import imagecodecs  # writes JPEG lossless, which pydicom cannot (requirements-dev.txt)
import numpy as np
import pydicom
import pytest
from conftest import OPENCV_IN_NODE, xray_like
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)
from test_on_device import (
    FRONTEND,
    _assert_no_slice_sent,
    _assert_parity,
    _ready_screen,
    _screen_on_device,
    browser_test,
    chromium,
    predictor,
    server,
    server_rows,
)

from core.analysis.synthetic import make_dicom

__all__ = ["chromium", "predictor", "server"]  # fixtures of tests/test_on_device.py, used here
node_test = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
STORED = xray_like(21, True, 320).astype(np.int32) * 15 + 100  # 12-bit values, as a detector writes them


def dicom(values: np.ndarray, syntax: str = ExplicitVRLittleEndian, allocated: int = 16, stored: int = 16,
          signed: bool = False, predictor_: int = 1, **tags) -> bytes:
    """A DICOM of these stored values (made by core.analysis.synthetic.make_dicom, then changed), in this
    transfer syntax, with these tags (pydicom keywords) set or, given None, removed."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((2, 2)))))
    values = np.asarray(values)
    dtype = f"{'i' if signed else 'u'}{allocated // 8}"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, stored, stored - 1, int(signed)
    ds.PixelData = values.astype(dtype).tobytes()
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if syntax == ExplicitVRBigEndian:  # pydicom writes the pixel bytes as they are: big-endian words here
        ds.PixelData = values.astype(">" + dtype).tobytes()
    elif syntax == RLELossless:
        ds.compress(RLELossless)
    elif syntax in (JPEGLossless, JPEGLosslessSV1, JPEGBaseline8Bit):
        unsigned = values.astype(np.int64) & (2**stored - 1)  # a signed value's bits, as the codestream holds them
        frame = (imagecodecs.jpeg8_encode(unsigned.astype(np.uint8), level=90) if syntax == JPEGBaseline8Bit else
                 imagecodecs.jpeg8_encode(unsigned.astype(np.uint16 if stored > 8 else np.uint8), lossless=True,
                                          predictor=predictor_, bitspersample=stored))
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)  # save_as will not write big endian from little
    return buffer.getvalue()


def lut_item(entries: int, first: int, bits: int, table: np.ndarray) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.LUTDescriptor = [entries, first, bits]
    item.LUTData = [int(v) for v in table]
    item["LUTDescriptor"].VR, item["LUTData"].VR = "US", "US"
    return item


def decoded_cases() -> dict[str, bytes]:
    """Every phase-one syntax, with the modality and VOI steps, bit depths and signs the server reads."""
    signed = STORED - 2000  # negative values, as a signed detector's
    big = xray_like(22, False, 1100).astype(np.int32) * 15 + 100
    ramp = np.arange(4096)
    return {
        "explicit_12bit.dcm": dicom(STORED, stored=12),
        "implicit_mono1_rescaled.dcm": dicom(STORED.max() - STORED, ImplicitVRLittleEndian, PhotometricInterpretation=
                                             "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-50),
        "big_endian_signed.dcm": dicom(signed, ExplicitVRBigEndian, stored=13, signed=True),
        "deflated_windowed.dcm": dicom(STORED, DeflatedExplicitVRLittleEndian, stored=12, WindowCenter=1500,
                                       WindowWidth=1800),
        "deflated_linear_exact.dcm": dicom(STORED, DeflatedExplicitVRLittleEndian, WindowCenter=[1400, 900],
                                           WindowWidth=[1600, 500], VOILUTFunction="LINEAR_EXACT"),
        "sigmoid.dcm": dicom(STORED, WindowCenter=1500, WindowWidth=1200, VOILUTFunction="SIGMOID"),
        "rle_signed_rescaled.dcm": dicom(signed, RLELossless, stored=16, signed=True, RescaleSlope=0.5,
                                         RescaleIntercept=1024, WindowCenter=1100, WindowWidth=2200),
        "rle_8bit.dcm": dicom(xray_like(23, True, 300), RLELossless, allocated=8, stored=8),
        "explicit_8bit.dcm": dicom(xray_like(24, False, 300), allocated=8, stored=8),
        "jpeg_lossless_sv1_12bit.dcm": dicom(STORED, JPEGLosslessSV1, stored=12),
        "jpeg_lossless_p14_signed.dcm": dicom(signed, JPEGLossless, stored=12, signed=True, predictor_=6),
        "jpeg_lossless_16bit.dcm": dicom(STORED * 12, JPEGLosslessSV1, stored=16),
        "voi_lut.dcm": dicom(STORED, stored=12, WindowCenter=100, WindowWidth=50,  # the LUT wins over the window
                             VOILUTSequence=[lut_item(3000, 200, 16, 30000 + 10 * np.sqrt(ramp[:3000]) ** 1.5)]),
        "modality_lut.dcm": dicom(STORED, stored=12, ModalityLUTSequence=[lut_item(4096, 0, 16, 65535 - 15 * ramp)],
                                  WindowCenter=30000, WindowWidth=40000),
        "large_reduced.dcm": dicom(big, stored=12),  # 1100 px: averaged down 4 times
        "large_windowed_odd.dcm": dicom(big[:1035, :700], WindowCenter=1800.5, WindowWidth=2500),  # 2 times
    }


def refused_cases() -> dict[str, bytes]:
    """DICOMs the server refuses, one for each of its reasons, and one it reads that the browser hands over."""
    rle = pydicom.dcmread(io.BytesIO(dicom(STORED, RLELossless)))
    frame = bytearray(next(pydicom.encaps.generate_frames(rle.PixelData, number_of_frames=1)))
    frame[8:12] = (len(frame) + 10).to_bytes(4, "little")  # the second segment starts past the end
    rle.PixelData = encapsulate([bytes(frame)])
    broken_rle = io.BytesIO()
    rle.save_as(broken_rle, enforce_file_format=True)
    plain = dicom(STORED)
    return {
        "ct.dcm": dicom(STORED, Modality="CT"),
        "no_pixels.dcm": dicom(STORED, PixelData=None),
        "cine.dcm": make_dicom(STORED, frames=3),
        "huge.dcm": dicom(STORED, Rows=8000, Columns=6000),
        "rgb.dcm": dicom(STORED, PhotometricInterpretation="RGB"),
        "no_rows.dcm": dicom(STORED, Rows=None),
        "no_bits_stored.dcm": dicom(STORED, BitsStored=None),
        "narrow_window.dcm": dicom(STORED, WindowCenter=1000, WindowWidth=0.5),
        "broken_rle.dcm": broken_rle.getvalue(),
        "garbage_jpeg_lossless.dcm": dicom(STORED, JPEGLosslessSV1, stored=12)[:-3000] + bytes(3000),
        "short_pixels.dcm": plain[:len(plain) // 2],
        "truncated.dcm": plain[:600],
        "not_dicom_inside.dcm": b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 20,
        "flat.dcm": dicom(np.full((300, 300), 700)),
        "jpeg_baseline.dcm": dicom(xray_like(25, True, 300), JPEGBaseline8Bit, allocated=8, stored=8),
    }


def _node_decode(tmp_path, files: dict[str, bytes]) -> dict[str, dict]:
    """dicom.js's decodeDicom then pipeline.js's stretched (to_uint8, the smallest side) under node, on the
    vendored libraries and OpenCV.js: each file's 8-bit pixels (saved beside it) or its refusal."""
    from ui import on_device

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    script = f"""
const fs = require("fs");
const {{ pathToFileURL }} = require("url");
const vendor = {json.dumps(str(FRONTEND / "vendor"))};
(async () => {{
  {OPENCV_IN_NODE}
  const P = await import(pathToFileURL({json.dumps(str(FRONTEND / "pipeline.js"))}));
  const D = await import(pathToFileURL({json.dumps(str(FRONTEND / "dicom.js"))}));
  const libraries = {{ dicomParser: require(vendor + "/dicom-parser/dicomParser.min.js"),
    lossless: await import(pathToFileURL(vendor + "/jpeg-lossless-decoder-js/lossless-min.js")) }};
  const constants = {json.dumps(on_device.constants())};
  const out = {{}};
  for (const name of {json.dumps(list(files))}) {{
    const decoded = await D.decodeDicom(new Uint8Array(fs.readFileSync(name)), libraries, new P.Cv(cv), constants);
    if (decoded.refused) {{ out[name] = decoded.refused; continue; }}
    const gray = P.stretched(decoded, constants);
    if (gray.error) {{ out[name] = {{ status: "error", code: gray.error, ...gray.sizes }}; continue; }}
    fs.writeFileSync(name + ".u8", gray.pixels);
    out[name] = {{ status: "ok", width: gray.width, height: gray.height }};
  }}
  console.log(JSON.stringify(out));
}})();
"""
    (tmp_path / "decode.js").write_text(script)
    done = subprocess.run(["node", "decode.js"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@node_test
def test_dicom_js_gives_the_servers_pixels_for_every_phase_one_syntax(tmp_path):
    """Exact (the same 8-bit pixels) where the server's arithmetic is float64 additions, products and
    divisions, which JS does in the same order with the same rounding; the sigmoid window (np.exp and
    Math.exp may differ in the last bit) and the float32 average of windowed values (OpenCV.js on wasm and
    opencv-python may add in another order) may move a pixel by one grey level, rarely."""
    from core.serving import imaging
    from core.serving.dicom import decode_dicom

    files = decoded_cases()
    got = _node_decode(tmp_path, files)
    for name, data in files.items():
        expected = imaging.to_uint8(decode_dicom(data)[0])
        assert got[name] == {"status": "ok", "width": expected.shape[1], "height": expected.shape[0]}, name
        pixels = np.fromfile(tmp_path / f"{name}.u8", np.uint8).reshape(expected.shape)
        difference = np.abs(pixels.astype(int) - expected)
        if name in ("sigmoid.dcm", "large_windowed_odd.dcm"):
            assert difference.max() <= 1 and difference.mean() < 1e-3, (name, difference.max(), difference.mean())
        else:
            assert difference.max() == 0, (name, int(difference.max()), int((difference > 0).sum()))
    assert got["large_reduced.dcm"]["width"] == 275 and got["large_windowed_odd.dcm"]["width"] == 350


@node_test
def test_dicom_js_refuses_what_the_server_refuses_with_its_words(tmp_path, predictor):
    from core.serving import screening
    from ui import on_device

    files = refused_cases()
    got = _node_decode(tmp_path, files)
    assert got.pop("jpeg_baseline.dcm") == {"status": "server", "code": "dicom_syntax",
                                           "transfer_syntax": JPEGBaseline8Bit}
    for name, browser in got.items():
        expected = screening.screen_bytes(predictor, name, files[name])
        row = on_device.row_from({"file": name, **browser}, predictor, "screening")
        assert (row.status, row.message) == (expected.status, expected.message), (name, browser)
    words = on_device.row_from({"file": "x.dcm", **got["broken_rle.dcm"]}, predictor, "screening").message
    assert words == "the DICOM compression (RLE Lossless) cannot be decoded here"


def device_cases() -> list[tuple[str, bytes]]:
    """Synthetic DICOMs for the browser: screened ones in several syntaxes, and the checks' refusals."""
    cases = decoded_cases()
    upright = xray_like(26, True, 300).astype(np.int32) * 16
    return [(name, cases[name]) for name in ("explicit_12bit.dcm", "implicit_mono1_rescaled.dcm",
                                             "deflated_windowed.dcm", "rle_signed_rescaled.dcm",
                                             "jpeg_lossless_sv1_12bit.dcm", "voi_lut.dcm", "large_reduced.dcm")] + [
        ("upside_down.dcm", dicom(upright[::-1, ::-1])),
        ("sideways.dcm", dicom(np.rot90(upright, -1))),
        ("noise.dcm", dicom(np.random.default_rng(5).integers(0, 4096, (300, 300)))),
        ("ct.dcm", dicom(upright, Modality="CT")),
        ("flat.dcm", dicom(np.full((300, 300), 700))),
    ]


@browser_test
def test_dicoms_screened_on_the_device_get_the_servers_rows_and_none_of_their_bytes_leaves(server, chromium,
                                                                                          predictor):
    files = device_cases()
    context, page, watched = _ready_screen(chromium, server)
    rows = _screen_on_device(page, files)
    _assert_no_slice_sent(files, watched)
    assert b"Doe^Jane" not in b"".join(watched["frames"])  # make_dicom's made-up patient
    expected = server_rows(predictor, files)
    parity = _assert_parity(rows, expected)
    assert parity["handed_to_server"] == [] and parity["screened"] == 6, parity
    kinds = {row["file"]: (row["status"], row["input_kind"]) for row in rows}
    assert kinds["sideways.dcm"] == ("rejected", "dicom") and kinds["ct.dcm"] == ("error", "")
    # The libraries came from the component's own files: nothing else was asked for.
    assert all(url.startswith(server.url) for url in watched["requests"]), watched["requests"]
    print(f"on-device DICOM parity: {parity}")
    context.close()
