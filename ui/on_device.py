"""Screening on the device: what the dashboard hands the browser component, and what it makes of the
numbers that come back (components/on_device; design and status in docs/on-device.md).

The browser gets each model file once, hash-checked against its card, and keeps it in Cache Storage;
it runs the pipeline of core.serving on its own copy of the file and returns numbers and codes only.
This module turns them into the same ScreeningRows, words and thresholds as the server path, so that
one source gives each message, threshold and calibration.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.util
import json
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import features

from core.serving import framing, imaging, photo, quality, registry, tta
from core.serving.predictor import Predictor, ScreeningResult
from core.serving.screening import ScreeningRow
from core.serving.settings import MAX_FILE_BYTES, MAX_PIXELS, PROJECT_ROOT

VENDOR_SCRIPT = PROJECT_ROOT / "components" / "on_device" / "vendor.py"  # pins the browser's libraries
PROBE = (PROJECT_ROOT / "components" / "on_device" / "streamlit_cxr_on_device" / "frontend" / "probe.json")
COMPONENT_KEY = "on_device"
PROBE_SEED = 11  # the synthetic X-ray the self-test screens (core.analysis.synthetic; no patient's image)
PROBE_SIDE = 256

# What a refusal or an error says, by the code the browser returns: the server path's words
# (core.serving.imaging and quality); tests/test_on_device.py checks both paths give the same.
SERVER_HINT = ("to screen it on the server, use the upload button above, or choose “Upload to the server” "
               "and the file again")
NOT_ON_DEVICE = {
    "dicom_syntax": "a DICOM compressed as {syntax_name} is not read in the browser yet",
    "dicom_pixels": "a DICOM of {samples} sample(s) of {bits} bits a pixel is not read in the browser yet",
    "mode": "this kind of image ({mode}) is not read in the browser yet",
    "png_exif": "a PNG carrying EXIF or an XMP orientation is not read in the browser yet",
    "png_transparency": "a PNG with a transparent colour is not read in the browser yet",
    "png_cut_short": "the PNG is cut short: the server may read what of it is there",
    "exif_orientation": "its EXIF orientation is written in a form the browser does not read",
    "jpeg_decoder": "the browser's JPEG decoder could not read it ({detail}); the server's may",
    "jpeg_version": ("the server decodes JPEGs with libjpeg-turbo {server} and the browser with {browser}, "
                     "whose pixels may differ"),
    "tinted": "it may be a photo of a film or a screenshot (it is tinted): only the server finds the X-ray in those",
    "drawn_margin": "it may be a screenshot (it has a drawn margin): only the server finds the X-ray in those",
    "camera": "it is a camera's photo: only the server finds the film in those",
    "not_plainly_digital": ("it does not read plainly as a digital chest X-ray: the server looks for a film or a "
                            "viewer in it, which the browser cannot yet"),
}


class _Fields(dict):
    """A row's fields for its words: one the browser left out reads "?" rather than failing the batch."""

    def __missing__(self, key: str) -> str:
        return "?"


@dataclass
class OnDeviceRow(ScreeningRow):
    """A row screened in the browser: its pictures stay there, under this id (store.js)."""

    picture_id: str = ""


def _errors() -> dict[str, str]:
    return {
        "empty": "the file is empty",
        "file_too_large": f"the file is larger than the {MAX_FILE_BYTES // 2**20} MB limit",
        "unsupported": "not a supported image: expected a JPEG, PNG or DICOM file",
        "corrupt": "the image is truncated or corrupt",
        "too_many_pixels": "the image is too large ({width}x{height} pixels)",
        "decompression_bomb": "the image is too large (decompression bomb)",
        "too_small": "the image is too small ({width}x{height} pixels)",
        "blank": "the image is blank (all pixels have the same value)",
        "colour": "not a chest X-ray: the image is in colour",
        "elongated": "not a chest X-ray: the image is too elongated ({width}x{height})",
        "upside_down": "the X-ray is upside down: save it upright, then upload it again",
        "browser_failure": "could not be screened in this browser ({detail})",
        "invalid_values": "the image holds invalid pixel values",
        # core.serving.dicom's words
        "dicom_corrupt": "the DICOM file is corrupt",
        "dicom_modality": "a DICOM of modality {modality} is not a chest radiograph (CR or DX expected)",
        "dicom_no_image": "the DICOM file holds no image (it may be truncated or corrupt)",
        "dicom_no_size": "the DICOM file is corrupt (image size missing)",
        "dicom_frames": "multi-frame DICOM ({frames} frames) is not supported: export a single image",
        "dicom_colour": "DICOM colour images ({photometric}) are not supported",
        "dicom_compression": "the DICOM compression ({syntax_name}) cannot be decoded here",
        "dicom_pixels_corrupt": "the DICOM pixel data is corrupt",
        # core.serving.quality's, for a DICOM (read as it is, with no film finder)
        "layout": "not a chest X-ray: the image does not have the layout of a chest radiograph; {hint}",
        "profile": "not a chest X-ray: its grey levels and texture are not those of a radiograph",
    }


def _derived(browser_row: dict) -> dict:
    """What a code's words need beyond the browser's numbers: a transfer syntax's name (pydicom's, as the
    server gives it) and the layout refusal's advice (quality.layout_hint's for a DICOM)."""
    derived = {}
    if "transfer_syntax" in browser_row:
        from pydicom.uid import UID  # only for such a DICOM, as on the server

        derived["syntax_name"] = UID(str(browser_row["transfer_syntax"])).name
    if browser_row.get("code") == "layout":
        index = browser_row.get("orientation")
        derived["hint"] = (quality.CHECK_UPRIGHT if index is None
                           else quality.turned_hint(list(quality._ORIENTATIONS)[int(index)]))
    return derived


def _handed_reason(browser_row: dict) -> str:
    """Why the browser handed this file to the server, in the server path's words."""
    code = browser_row.get("code", "")
    return NOT_ON_DEVICE.get(code, code).format_map(_Fields({**browser_row, **_derived(browser_row)}))


def handed_note(browser_rows: list[dict], screened: Collection[int] = ()) -> str:
    """One sentence naming the batch's files handed to the server and not yet screened there (by index),
    each with its reason; "" if none."""
    named = [f"{row.get('file', '')} ({_handed_reason(row)})" for index, row in enumerate(browser_rows)
             if row.get("status") == "server" and index not in screened]
    return f"Not screened on this device: {'; '.join(named)}." if named else ""


def handed_uploads(upload: dict | None, batch: dict) -> list[tuple[int, str, bytes]]:
    """The files the user agreed to upload (the component's one-shot ``upload`` trigger), as (index in the
    batch, name, bytes). Only this batch's handed files are taken, so that nothing else is screened
    under their rows."""
    if not isinstance(upload, dict) or upload.get("batch") != batch.get("batch"):
        return []
    rows = batch.get("rows") or []
    taken = []
    for sent in upload.get("files") or []:
        index = sent.get("index") if isinstance(sent, dict) else None
        if not (isinstance(index, int) and 0 <= index < len(rows) and rows[index].get("status") == "server"
                and rows[index].get("file") == sent.get("name")):
            continue
        try:
            data = base64.b64decode(sent.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            continue
        # The very file the browser screened and handed over (its sha256 came with its row).
        if hashlib.sha256(data).hexdigest() == rows[index].get("image_sha256"):
            taken.append((index, sent["name"], data))
    return taken


def constants() -> dict:
    """core's constants that the browser's pipeline reads: one source for each."""
    return {
        "MAX_FILE_BYTES": MAX_FILE_BYTES, "MAX_PIXELS": MAX_PIXELS, "MIN_SIDE": imaging.MIN_SIDE,
        "DECODE_SIDE": imaging.DECODE_SIDE, "MAX_REDUCTION": imaging.MAX_REDUCTION,
        # The browser decodes JPEGs with the libjpeg-turbo Pillow 13 bundles; another gives other pixels.
        "LIBJPEG_TURBO": features.version("libjpeg_turbo"),
        "RADIOGRAPH_MODALITIES": list(imaging.RADIOGRAPH_MODALITIES), "DIGITAL_LAYOUT_SHARE": imaging.DIGITAL_LAYOUT_SHARE,
        "CAMERA_TAGS": [int(tag) for tag in imaging.CAMERA_TAGS],
        "TINTED": photo.TINTED, "PADDING": photo.PADDING, "CHROMA_SIDE": photo.CHROMA_SIDE,
        "SATURATED": photo.SATURATED, "MAX_COLOURFULNESS": quality.MAX_COLOURFULNESS,
        "MAX_ASPECT_RATIO": quality.MAX_ASPECT_RATIO, "UPSIDE_DOWN_MARGIN": quality.UPSIDE_DOWN_MARGIN,
        "PROFILE_SIDE": quality.PROFILE_SIDE, "PROFILE_BINS": quality.PROFILE_BINS,
        "PROFILE_PERCENTILES": list(quality.PROFILE_PERCENTILES),
        "LOCALISER_SIZE": framing.LOCALISER_SIZE, "LUNG_FIELD_CENTRE": list(framing.LUNG_FIELD_CENTRE),
    }


@functools.lru_cache(maxsize=4)
def detector_json(directory: Path | None = None) -> bytes:
    """The shipped X-ray check as JSON numbers (float64 exactly: Python's repr round-trips in JS)."""
    detector = registry.load_detector(directory)
    if detector is None:
        raise FileNotFoundError("models/xray_detector.npz is missing: on-device screening needs the X-ray check")
    fields = {"means": detector.means, "components": detector.components,
              "layout_threshold": detector.layout_threshold, "profile_mean": detector.profile_mean,
              "profile_precision": detector.profile_precision, "profile_threshold": detector.profile_threshold}
    return json.dumps({k: np.asarray(v).tolist() for k, v in fields.items()}, separators=(",", ":")).encode()


@functools.cache
def libraries() -> dict[str, str]:
    """The vendored libraries' pinned sha256, by path under the component's vendor folder: the browser
    checks each before use and keeps it in Cache Storage."""
    spec = importlib.util.spec_from_file_location("streamlit_cxr_on_device_vendor", VENDOR_SCRIPT)
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    return vendor.pinned_files()


def assets(predictor: Predictor) -> list[dict]:
    """The files the browser needs, each named by the hash the browser checks it against."""
    card = predictor.card
    if not card.onnx:
        raise ValueError(f"{card.name} has no ONNX export: it cannot run in the browser")
    files = [{"role": "model", "sha256": card.onnx["sha256"], "bytes": card.onnx["file_bytes"]}]
    if predictor.spec.frame:
        files.append({"role": "localiser", "sha256": predictor.spec.frame,
                      "bytes": framing.LOCALISER_PATH.stat().st_size})
    detector = detector_json(predictor.directory)
    files.append({"role": "detector", "sha256": hashlib.sha256(detector).hexdigest(), "bytes": len(detector)})
    return files


def _asset_bytes(predictor: Predictor, role: str) -> bytes:
    if role == "model":
        return registry.verified_path(predictor.card.onnx["file"], predictor.card.onnx["sha256"],
                                      predictor.directory).read_bytes()
    if role == "localiser":
        return registry.verified_path(framing.LOCALISER_PATH.name, predictor.spec.frame,
                                      framing.LOCALISER_PATH.parent).read_bytes()
    return detector_json(predictor.directory)


def component_data(predictor: Predictor, missing: list[str] | None, show_input: bool,
                   handed: dict | None = None) -> dict:
    """What the component is mounted with. The files' bytes go only while the browser says it lacks
    them (``missing``, from its state): once kept in its Cache Storage, a visit sends none. ``handed``:
    the last batch's number and its handed_note, shown above the button that uploads those files."""
    from streamlit import config  # the dashboard's; `--write-probe` needs no Streamlit

    files = assets(predictor)
    wanted = set(missing or ())
    return {
        "assets": files,
        "payload": {f["sha256"]: base64.b64encode(_asset_bytes(predictor, f["role"])).decode()
                    for f in files if f["sha256"] in wanted},
        "constants": constants(),
        "libraries": libraries(),
        "recipe": browser_recipe(predictor),
        "show_input": show_input,
        "handed": handed,
        # Handed files go in uploads of at most this much base64: under server.maxMessageSize (the websocket
        # drops a bigger message), with room for the other widgets' states, and no more than one file the
        # server takes (MAX_FILE_BYTES) needs.
        "upload_limit": int(min(config.get_option("server.maxMessageSize") * 2**20 * 0.9, 4 / 3 * MAX_FILE_BYTES + 2**20)),
    }


def screen(data: dict):
    """Mount the on-device screener (always under one key: streamlit#14710)."""
    import streamlit_cxr_on_device

    return streamlit_cxr_on_device.screen(data, key=COMPONENT_KEY)


def picture(picture_id: str, heat: bool, opacity: float, caption: str, key: str) -> None:
    import streamlit_cxr_on_device

    streamlit_cxr_on_device.picture(picture_id, heat, opacity, caption, key)


def browser_recipe(predictor: Predictor) -> dict:
    """What the browser runs besides the model file (its preprocessing and test-time zooms): sent with the
    component's data and echoed with each row, so that a row is taken only at the recipe it was made with."""
    spec = predictor.spec
    return {"spec": {"size": spec.size, "clahe": spec.clahe, "equalise": spec.equalise, "frame": bool(spec.frame),
                     "frame_side": spec.frame_side},
            "zooms": [float(zoom) for zoom in predictor.test_time_zooms]}


def row_from(browser_row: dict, predictor: Predictor, operating_point: str) -> ScreeningRow:
    """The browser's numbers as the server path's row: calibration, label and threshold applied here."""
    name = str(browser_row.get("file", ""))
    status, code = browser_row.get("status"), browser_row.get("code", "")
    if status == "server":
        return OnDeviceRow(name, "error", predictor.name,
                           f"not screened on this device: {_handed_reason(browser_row)}; {SERVER_HINT}")
    browser_row = {**browser_row, **_derived(browser_row)}
    if status in ("error", "rejected"):
        template = _errors().get(code, "could not be screened ({code})")
        return OnDeviceRow(name, status, predictor.name, template.format_map(_Fields({"code": code, **browser_row})),
                           refused_kind=browser_row.get("input_kind"))
    if browser_row.get("model_sha256") != predictor.card.onnx["sha256"]:
        return OnDeviceRow(name, "error", predictor.name,
                           "screened in the browser with another model file: screen it again")
    if browser_row.get("recipe") != browser_recipe(predictor):  # `core calibrate` can change the zooms alone
        return OnDeviceRow(name, "error", predictor.name,
                           "screened in the browser with other test-time zooms or preprocessing: screen it again")
    probability = float(predictor.calibrated(np.array([browser_row["raw"]]))[0])
    measured = browser_row["quality"]
    warnings = quality.quality_warnings(measured["std"], measured["clipped"], measured["height"], measured["width"])
    result = ScreeningResult(
        probability=probability, label=predictor.label_for(probability, operating_point),
        operating_point=operating_point, threshold=float(predictor.operating_points[operating_point]),
        model=predictor.name, model_sha256=predictor.card.sha256,
        site=predictor.site.name if predictor.site else None, input_kind=browser_row.get("input_kind", "digital"),
        # The browser runs the server's recipe on the same model file, so a clinic can label these rows
        # and calibrate its site from them (docs/site-calibration.md) as from the server's.
        raw_output=float(browser_row["raw"]), raw_recipe=predictor.raw_recipe,
        image_sha256=str(browser_row.get("image_sha256", "")),
        timings_ms={k: float(v) for k, v in browser_row.get("timings_ms", {}).items()}, warnings=warnings)
    return OnDeviceRow(name, "ok", predictor.name, "; ".join(warnings), result, picture_id=str(browser_row.get("id", "")))


def probe_image() -> np.ndarray:
    from core.analysis.synthetic import chest_xray

    return chest_xray(PROBE_SEED, True, PROBE_SIDE)


def probe_expected(predictor: Predictor, gray: np.ndarray) -> dict:
    """What the self-test must find for the probe: the server path's own measures of its pixels."""
    detector = registry.load_detector(predictor.directory)
    box = imaging.standard_frame(gray, predictor.spec)
    tensor = imaging._to_tensor(box.crop(gray), predictor.spec)
    raws = predictor.network.forward(tta.views(tensor[np.newaxis], predictor.test_time_zooms))[0]
    return {
        "layout_residual": detector.layout_residual(gray),
        "profile_distance": float(detector.distances(quality.profile_features(gray)[np.newaxis])[0]),
        "frame": [box.top, box.left, box.bottom, box.right],
        "raws": [float(r) for r in raws],
        "raw": float(tta.average(raws, predictor.test_time_zooms)[0]),
    }


def write_probe(path: Path = PROBE) -> dict:
    """The self-test's probe for the default model: a synthetic X-ray (gray PNG) and what Python's
    onnxruntime finds for it. Written again whenever the default model, the localiser or the check changes
    (tests/test_on_device.py fails until then)."""
    from core.analysis.synthetic import encode

    predictor = Predictor.load()
    gray = probe_image()
    files = {f["role"]: f["sha256"] for f in assets(predictor)}
    probe = {"about": "on-device self-test: python3 -m ui.on_device --write-probe",
             "sha256": {"model": files["model"], "localiser": files.get("localiser"), "detector": files["detector"]},
             "png_base64": base64.b64encode(encode(gray, "PNG")).decode(),
             "expected": probe_expected(predictor, gray)}
    path.write_text(json.dumps(probe, indent=1) + "\n")
    return probe


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-probe"]:
        print(json.dumps(write_probe()["expected"], indent=1))
    else:
        raise SystemExit("usage: python3 -m ui.on_device --write-probe")
