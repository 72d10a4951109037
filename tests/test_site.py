"""Site calibration: a clinic's operating points from its own labelled X-rays."""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import encode, run_core, xray_like

from core.analysis import evaluation, site_calibration
from core.analysis.site_calibration import LocalSet
from core.analysis.synthetic import make_dicom
from core.serving import registry
from core.serving.card import ModelCard
from core.serving.imaging import PreprocessSpec
from core.serving.site import SiteProfile, SiteProfileError, seal

TARGET = 0.98


def shifted_site(rng: np.random.Generator, patients: int, prevalence: float = 0.6) -> LocalSet:
    """Raw scores of a site whose images are shifted towards pneumonia (as the withheld period's
    were): two images per patient that share a patient effect, so images are not independent."""
    labels, raw, names = [], [], []
    for p in range(patients):
        label = int(rng.random() < prevalence)
        patient_effect = rng.normal(0, 0.8)
        for _ in range(2):
            logit = (4.0 if label else 1.5) + patient_effect + rng.normal(0, 1.0)
            labels.append(label)
            raw.append(1 / (1 + np.exp(-logit)))
            names.append(f"{label}/person{p}")
    return LocalSet(np.array(raw), np.array(labels), names, [f"{i:064x}" for i in range(len(labels))])


def true_sensitivity(threshold: float, rng: np.random.Generator) -> float:
    """Sensitivity at a threshold on the site's whole population (a very large sample)."""
    logits = 4.0 + rng.normal(0, 0.8, 200_000) + rng.normal(0, 1.0, 200_000)
    return float((1 / (1 + np.exp(-logits)) >= threshold).mean())


def stub_predictor(sha: str = "a" * 64) -> SimpleNamespace:
    card = ModelCard("stub", "stub", "a stand-in", {"size": 32}, {"balanced": 0.9, "screening": 0.8}, {}, {},
                     sha256=sha)
    return SimpleNamespace(name="stub", card=card, operating_points=card.operating_points)


def test_images_needed_follows_the_exact_binomial_bound():
    # 0.98 ** 148 > 0.05 >= 0.98 ** 149: 149 pneumonia images, none missed, show 0.98 at 95%.
    assert site_calibration.images_needed(0.98) == 149
    assert 0.98 ** 148 > 0.05 >= 0.98 ** 149
    assert site_calibration.images_needed(0.95) == 59


def test_the_bounded_rule_holds_the_target_on_new_patients_where_the_plain_rule_does_not():
    rng = np.random.default_rng(0)
    population = np.random.default_rng(1)
    bounded, plain = [], []
    for _ in range(20):
        site = shifted_site(rng, 300)
        threshold = site_calibration.screening_threshold(site.raw, site.labels, site.patients, TARGET)
        bounded.append(true_sensitivity(threshold, population))
        plain.append(true_sensitivity(
            evaluation.highest_threshold_with_sensitivity(site.labels, site.raw, TARGET), population))
    # The bound holds the target in most draws; the plain rule in about half of them.
    assert np.mean(np.array(bounded) >= TARGET) >= 0.8, bounded
    assert np.mean(np.array(plain) >= TARGET) < 0.7, plain
    assert np.mean(bounded) > np.mean(plain)


def test_calibrating_on_one_half_of_the_patients_holds_sensitivity_on_the_other_half():
    rng = np.random.default_rng(3)
    sensitivities, specificities = [], []
    for _ in range(15):
        site = shifted_site(rng, 400)
        patients = np.array(site.patients)
        first = np.isin(patients, rng.permutation(np.unique(patients))[: len(np.unique(patients)) // 2])
        half = LocalSet(site.raw[first], site.labels[first], list(patients[first]), [])
        content, _ = site_calibration.calibrate(stub_predictor(), half, TARGET)
        profile = SiteProfile.from_content(content, "half")
        other = evaluation.apply_calibration(site.raw[~first], profile.calibration)
        at = evaluation.metrics_at(site.labels[~first], other, profile.operating_points["screening"])
        sensitivities.append(at["sensitivity"])
        specificities.append(at["specificity"])
    assert np.mean(sensitivities) >= 0.975, sensitivities
    assert np.mean(np.array(sensitivities) >= 0.96) >= 0.8
    assert np.mean(specificities) > 0.3  # not bought by referring everyone


def test_a_too_small_set_gets_the_warning_and_keeps_the_shipped_screening_point():
    site = shifted_site(np.random.default_rng(5), 40)
    content, advice = site_calibration.calibrate(stub_predictor(), site, TARGET)
    assert not content["sample_size"]["sufficient"] and content["sample_size"]["needed"] == 149
    assert any("cannot show a sensitivity of 0.98" in line and "at least 149" in line for line in advice)
    assert content["calibration"]["source"] == "shipped"  # too few to refit
    assert content["operating_points"]["screening"] <= 0.8  # never above the shipped point


def test_a_profile_for_another_model_or_file_or_edited_by_hand_is_refused():
    content, _ = site_calibration.calibrate(stub_predictor(), shifted_site(np.random.default_rng(6), 300), TARGET)
    profile = SiteProfile.from_content(content, "clinic")
    card = stub_predictor().card
    profile.check_model(card)
    with pytest.raises(SiteProfileError, match="made for model 'stub', not 'other'"):
        profile.check_model(replace(card, name="other"))
    with pytest.raises(SiteProfileError, match="another file of model 'stub'"):
        profile.check_model(replace(card, sha256="b" * 64))
    edited = json.loads(json.dumps(content))
    edited["operating_points"]["screening"] = 0.99
    with pytest.raises(SiteProfileError, match="edited"):
        SiteProfile.from_content(edited, "clinic")
    with pytest.raises(SiteProfileError, match="not valid JSON"):
        SiteProfile.from_bytes(b"{not json", "clinic")
    resealed = seal(edited)  # a deliberate new profile is accepted
    assert SiteProfile.from_content(resealed, "clinic").operating_points["screening"] == 0.99


def test_the_profile_holds_no_file_names_pixels_or_dicom_tags():
    predictor = stub_predictor()
    predictor.spec, predictor.detector = PreprocessSpec(32), None
    predictor.raw_probabilities = lambda x: 1.0 - x.mean(axis=(1, 2, 3))  # hazier = pneumonia
    files = [(f"secret_name_{i}.jpeg", encode(xray_like(i, bool(i % 2), 96)), i % 2) for i in range(12)]
    files.append(("ward7/JaneDoe.dcm", make_dicom(xray_like(99, True, 96) * 200, patient="Doe^Jane"), 1))
    local = site_calibration.score_files(predictor, files)
    content, _ = site_calibration.calibrate(predictor, local, TARGET, "clinic")
    text = json.dumps(content)
    for secret in ("secret_name", "JaneDoe", "ward7", "Doe^Jane", "123456", "20200101", ".jpeg", ".dcm"):
        assert secret not in text
    assert content["counts"]["NORMAL"] + content["counts"]["PNEUMONIA"] == len(files) - content["counts"]["refused"]
    assert len(content["set_sha256"]) == 64


def test_calibrate_site_then_screen_and_evaluate_with_the_profile(tmp_path):
    site_dir = tmp_path / "clinic"
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        (site_dir / name).mkdir(parents=True)
        for i in range(12):
            (site_dir / name / f"IM-{i:04d}-0001.jpeg").write_bytes(encode(xray_like(100 * label + i, bool(label), 200)))
    (site_dir / "NORMAL" / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    profile_path = tmp_path / "sites" / "clinic.json"  # the folder is made as needed
    done = run_core("calibrate-site", "--data", str(site_dir), "--out", str(profile_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "notes.png" in done.stderr and "corrupt" in done.stderr  # refused files are listed with reasons
    assert "cannot show a sensitivity of 0.98" in done.stdout and "at least 149" in done.stdout
    assert "shipped" in done.stdout and "site" in done.stdout
    content = json.loads(profile_path.read_text())
    card = registry.load_card(registry.default_model_name())
    assert content["model"] == card.name and content["model_sha256"] == card.sha256

    screened = run_core("screen", str(site_dir / "PNEUMONIA"), "--site", str(profile_path), "--format", "json")
    rows = json.loads(screened.stdout)
    assert {r["site"] for r in rows} == {"clinic"}
    assert {r["threshold"] for r in rows} == {content["operating_points"]["screening"]}

    out = tmp_path / "eval.json"
    evaluated = run_core("evaluate", "--data", str(tmp_path), "--split", "clinic", "--site", str(profile_path),
                      "--json", str(out))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    [record] = json.loads(out.read_text())
    assert record["site"] == "clinic"
    assert record["operating_points"]["balanced"]["threshold"] == content["operating_points"]["balanced"]
    assert record["threshold"] == content["operating_points"]["balanced"]

    content["operating_points"]["screening"] = 0.5
    profile_path.write_text(json.dumps(content))
    refused = run_core("screen", str(site_dir / "PNEUMONIA"), "--site", str(profile_path))
    assert refused.returncode != 0 and "edited" in refused.stderr


def test_a_zip_member_over_the_upload_limit_is_refused_before_it_is_unpacked():
    from core.serving.settings import MAX_FILE_BYTES

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("site/NORMAL/IM-0001-0001.jpeg", encode(xray_like(1, False, 96)))
        archive.writestr("site/PNEUMONIA/huge.jpeg", b"\0" * (MAX_FILE_BYTES + 1))
        archive.writestr("site/notes.txt", b"not an image")
    images = site_calibration.read_zip(buffer.getvalue())
    assert [(name, label) for name, _, label in images.files] == [("site/NORMAL/IM-0001-0001.jpeg", 0)]
    assert images.refused == [("site/PNEUMONIA/huge.jpeg", "larger than the 50 MB limit")]
    with pytest.raises(ValueError, match="not a readable zip"):
        site_calibration.read_zip(b"PK not really")
