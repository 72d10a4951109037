"""Clinic inputs: DICOM variants, format agreement, refusals, and a fuzzer on the decoding path."""
import io
import zlib

import numpy as np
import pytest
from conftest import encode, xray_like
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.uid import RLELossless

from core.analysis.synthetic import make_dicom
from core.serving import screening
from core.serving.imaging import ImageError, PreprocessSpec, decode_image, preprocess
from core.serving.predictor import Predictor

GRAY = xray_like(11, True, 256)
STORED = GRAY.astype(np.uint16) * 16 + 100  # 12-bit-like values, as a detector writes them


def png16(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_monochrome1_is_inverted_and_rescale_applied():
    inverted = STORED.max() + STORED.min() - STORED
    decoded = decode_image(make_dicom(inverted, monochrome1=True, slope=2.0, intercept=-50))
    np.testing.assert_allclose(decoded.pixels.astype(int), decode_image(png16(STORED)).pixels.astype(int), atol=1)


def test_voi_window_is_applied():
    centre, width = float(np.percentile(STORED, 50)), float(np.ptp(STORED) / 4)
    windowed = decode_image(make_dicom(STORED, window=(centre, width))).pixels.astype(float)
    # DICOM PS3.3 C.11.2.1.2 linear window, which saturates both ends of a narrow window.
    expected = np.clip((STORED - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255
    assert np.abs(windowed - expected).max() <= 2
    assert np.mean(windowed == 0) > 0.01 and np.mean(windowed == 255) > 0.01


def test_compressed_dicom_is_decoded():
    plain = decode_image(make_dicom(STORED)).pixels
    np.testing.assert_array_equal(decode_image(make_dicom(STORED, transfer_syntax=RLELossless)).pixels, plain)


def test_same_image_as_png16_dicom_and_jpeg_gets_nearly_the_same_probability(tiny_models):
    predictor = Predictor.load(directory=tiny_models)
    inverted = STORED.max() + STORED.min() - STORED
    versions = {"png16": png16(STORED), "dicom": make_dicom(inverted, monochrome1=True),
                "jpeg": encode(GRAY, "JPEG", quality=92)}
    probabilities = {k: predictor.screen(v).probability for k, v in versions.items()}
    assert max(probabilities.values()) - min(probabilities.values()) < 0.03, probabilities
    spec = PreprocessSpec(64)
    tensors = [preprocess(decode_image(v).pixels, spec) for v in versions.values()]
    assert max(np.abs(t - tensors[0]).mean() for t in tensors) < 0.02


@pytest.mark.parametrize("payload, reason", [
    (make_dicom(STORED, frames=3), "multi-frame"),
    (make_dicom(STORED, modality="CT"), "modality CT is not a chest radiograph"),
    (make_dicom(STORED, modality="MR"), "modality MR is not a chest radiograph"),
    (b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 20, "corrupt|holds no image"),
    (make_dicom(STORED)[:600], "corrupt"),
])
def test_bad_dicom_is_refused_with_a_reason(payload, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(payload)


def test_patient_tags_are_kept_apart_and_never_exported(tiny_models):
    data = make_dicom(STORED, patient="Mwangi^Amina")
    assert decode_image(data).private_tags["PatientName"] == "Mwangi^Amina"
    predictor = Predictor.load(directory=tiny_models)
    row = screening.screen_bytes(predictor, "scan.dcm", data)
    assert row.status == "ok"
    exported = screening.rows_to_csv([row]) + screening.rows_to_json([row]) + repr(row.result.to_dict())
    assert "Mwangi" not in exported and "123456" not in exported


def test_nothing_of_a_dicom_file_is_logged(caplog, recwarn):
    broken = make_dicom(STORED, patient="Okafor^Chidi")
    broken = broken.replace(b"Okafor^Chidi", b"Okafor^Chidi" + b"\x00" * 0)[:-2000]
    with pytest.raises(ImageError):
        decode_image(broken)
    decode_image(make_dicom(STORED, patient="Okafor^Chidi"))
    logged = caplog.text + " ".join(str(w.message) for w in recwarn)
    assert "Okafor" not in logged


def test_file_over_the_size_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    import core.serving.imaging
    import core.serving.screening

    monkeypatch.setattr(core.serving.imaging, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(core.serving.screening, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.png"
    big.write_bytes(encode(xray_like(1, True, 256), "PNG"))
    with pytest.raises(ImageError, match="larger than"):
        screening.read_file(big)
    with pytest.raises(ImageError, match="larger than"):
        decode_image(big.read_bytes())


# --- Fuzzing ----------------------------------------------------------------
SEEDS = [encode(xray_like(5, True, 64), "JPEG"), encode(xray_like(6, False, 64), "PNG"),
         make_dicom(STORED[:64, :64]), png16(STORED[:64, :64])]


@st.composite
def mutated(draw):
    """A seed file with random bytes flipped, cut, or inserted; or random bytes behind a valid magic."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        position = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position:]
            if not data:
                break
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[position:position + 16] = bytes(min(16, len(data) - position))
    return bytes(data)


def _decode_or_refuse(data: bytes) -> None:
    try:
        decoded = decode_image(data)
    except ImageError:
        return
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 2


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_decode_or_raise_only_image_error(data):
    _decode_or_refuse(data)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\0" * 128 + b"DICM", b""]),
       st.binary(max_size=2048))
def test_random_bytes_behind_a_magic_number_raise_only_image_error(magic, tail):
    _decode_or_refuse(magic + tail)


def test_png_bomb_with_huge_dimensions_in_a_tiny_file():
    import struct

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 16, 0, 0, 0, 0))
            + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="too large"):
        decode_image(bomb)
