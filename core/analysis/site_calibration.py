"""Site calibration: a clinic's own operating points from its own labelled X-rays.

Thresholds fitted at the training hospital do not carry over to another
machine and population (the withheld period referred 37% of healthy children
at the shipped screening point). The WHO advises programmes using computer-aided
chest X-ray reading to set thresholds on local data; this module turns a folder
of a few hundred labelled local X-rays into a site profile (``core.serving.site``).

Screening point: the highest threshold at which the one-sided 95% lower
confidence bound of sensitivity, bootstrapped over patients (over images where
file names do not identify patients), still meets the target. The plain rule
("sensitivity >= target on these images") fell to 0.949 on new patients in the
worst of 50 draws on the withheld set; the bound held it.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from core.analysis import evaluation
from core.analysis.data import patient_id
from core.analysis.reports import in_batches
from core.serving import screening
from core.serving.imaging import ImageError, load_model_input
from core.serving.predictor import Predictor
from core.serving.quality import check_chest_xray
from core.serving.settings import CLASS_NAMES, IMAGE_SUFFIXES, MAX_FILE_BYTES, TOOL_VERSION
from core.serving.site import SiteProfile, seal

CONFIDENCE = 0.95  # one-sided, for the screening point's sensitivity bound
BOOTSTRAP_ROUNDS = 1000
# Platt calibration has two parameters; below these counts a refit follows the
# noise of the few local images more than the shift, and the shipped one is kept.
MIN_CALIBRATION_PER_CLASS = 50


@dataclass
class LocalSet:
    """A site's scored images: raw model outputs, labels and patients; no names or pixels kept."""

    raw: np.ndarray
    labels: np.ndarray
    patients: list[str]
    image_hashes: list[str]
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): shown, never stored
    # What the bootstrap resamples: patients named by the files (a folder of images), by the
    # clinic's patient column, or images where that is blank (results); see RESAMPLED_BY.
    resampled_by: str = "patient, from file names"
    source: dict = field(default_factory=lambda: {"kind": "images"})  # what the set was made from, with counts

    def canonical(self) -> LocalSet:
        """The same set in an order and with patient names that depend only on its images, labels
        and grouping: the bootstrap then draws the same resamples however the set was gathered
        (from folders or from results, in any order, whatever the patients are called)."""
        order = (np.argsort(np.asarray(self.image_hashes), kind="stable") if len(self.image_hashes) == len(self.labels)
                 else np.arange(len(self.labels)))
        renamed: dict[str, str] = {}
        patients = [renamed.setdefault(self.patients[i], f"p{len(renamed)}") for i in order]
        return LocalSet(self.raw[order], self.labels[order], patients, [self.image_hashes[i] for i in order]
                        if len(self.image_hashes) == len(self.labels) else [], self.refused, self.resampled_by,
                        self.source)

    def set_digest(self) -> str:
        """sha256 of the sorted (image sha256, label) pairs: names nothing, and changes with any diagnosis."""
        pairs = sorted(f"{digest}:{CLASS_NAMES[label]}" for digest, label in zip(self.image_hashes, self.labels))
        return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def images_needed(target: float, confidence: float = CONFIDENCE) -> int:
    """Pneumonia images needed to show sensitivity >= target with this confidence when none
    is missed: the smallest n with target ** n <= 1 - confidence (exact binomial, Clopper-Pearson)."""
    return math.ceil(math.log(1.0 - confidence) / math.log(target))


@dataclass
class LabelledImages:
    """A site's labelled X-rays as (name, bytes, label), and what could not be read, with why."""

    files: list[tuple[str, bytes, int]]
    refused: list[tuple[str, str]] = field(default_factory=list)


def read_folder(folder: str | Path) -> LabelledImages:
    """Every image under folder/NORMAL and folder/PNEUMONIA, with the screening path's size limit."""
    folder = Path(folder)
    missing = [name for name in CLASS_NAMES if not (folder / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder} needs {' and '.join(f'{m}/' for m in CLASS_NAMES)} folders "
                                f"of labelled X-rays ({', '.join(missing)} missing)")
    images = LabelledImages([])
    for label, name in enumerate(CLASS_NAMES):
        for path in screening.expand_paths([folder / name]):
            try:
                images.files.append((str(path), screening.read_file(path), label))
            except (ImageError, OSError) as exc:
                images.refused.append((str(path), str(exc) if isinstance(exc, ImageError) else "cannot be read"))
    return images


def read_zip(data: bytes) -> LabelledImages:
    """Every image in a NORMAL/ or PNEUMONIA/ folder of a zip, read in memory; a member larger
    than the upload limit is refused before it is unpacked. Raises ValueError for a damaged zip."""
    images = LabelledImages([])
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                path = PurePosixPath(info.filename)
                label = next((CLASS_NAMES.index(p) for p in path.parts[:-1] if p in CLASS_NAMES), None)
                if info.is_dir() or label is None or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if info.file_size > MAX_FILE_BYTES:
                    images.refused.append((info.filename, f"larger than the {MAX_FILE_BYTES // 2**20} MB limit"))
                    continue
                images.files.append((info.filename, archive.read(info), label))
    except zipfile.BadZipFile as exc:
        raise ValueError("not a readable zip file") from exc
    return images


def score_files(predictor: Predictor, files: list[tuple[str, bytes, int]],
                progress: Callable[[int, int], None] | None = None) -> LocalSet:
    """Raw (uncalibrated, zoom-averaged) outputs for (name, bytes, label) files that pass the input checks."""
    inputs, labels, patients, hashes, names, refused = [], [], [], [], [], []
    for done, (name, data, label) in enumerate(files, 1):
        digest = hashlib.sha256(data).hexdigest()
        try:
            loaded = load_model_input(data, predictor.spec)
            check_chest_xray(loaded.decoded, predictor.detector)
        except ImageError as exc:
            refused.append((name, str(exc)))
        else:
            inputs.append(loaded.tensor)
            labels.append(label)
            # A patient's images are resampled together; unknown names count as their own patient.
            patients.append(f"{CLASS_NAMES[label]}/{patient_id(Path(name).name)}")
            hashes.append(digest)
            names.append(name)
        if progress:
            progress(done, len(files))
    raw = in_batches(predictor.raw_probabilities, np.stack(inputs)) if inputs else np.zeros(0)
    local = LocalSet(raw, np.asarray(labels, np.int64), patients, hashes, refused)
    return one_per_image(local, names)


def one_per_image(local: LocalSet, names: list[str]) -> LocalSet:
    """Each image (by sha256) counted once: a copy with the same label is listed and dropped, and
    an image given both labels is listed and not used at all. The copy kept is one with a named patient
    where there is one, the first of them by name, so that neither the order of the files nor of the
    rows changes the set. names: each image's file or row, for the list."""
    def preference(i: int) -> tuple[bool, str]:
        return local.patients[i].startswith(IMAGE_GROUP), local.patients[i]

    first: dict[str, int] = {}
    for i, digest in enumerate(local.image_hashes):
        if digest not in first or preference(i) < preference(first[digest]):
            first[digest] = i
    conflicting = {digest for i, digest in enumerate(local.image_hashes) if local.labels[i] != local.labels[first[digest]]}
    keep, refused, counts = [], list(local.refused), {"repeated": 0, "conflicting": 0}
    for i, digest in enumerate(local.image_hashes):
        if digest in conflicting:
            counts["conflicting"] += 1
            refused.append((names[i], "the same image is given both diagnoses elsewhere in the set: not used"))
        elif first[digest] != i:
            counts["repeated"] += 1
            refused.append((names[i], f"the same image as {names[first[digest]]}: counted once"))
        else:
            keep.append(i)
    chosen = np.asarray(keep, np.int64)
    return replace(local, raw=local.raw[chosen], labels=local.labels[chosen],
                   patients=[local.patients[i] for i in keep], image_hashes=[local.image_hashes[i] for i in keep],
                   refused=refused, source={**local.source, **counts})


def score(predictor: Predictor, images: LabelledImages, progress=None) -> LocalSet:
    """score_files over read images; files that could not be read are listed as refused first."""
    local = score_files(predictor, images.files, progress)
    local.refused = images.refused + local.refused
    return local


# A results file (the Screen page's CSV, `core screen`'s CSV or JSON, an archive job's folder) as a
# labelled set: the clinic fills in each child's diagnosis as it comes back, and the patient where known.
DIAGNOSES = {name.lower(): label for label, name in enumerate(CLASS_NAMES)}
RESULT_SUFFIXES = (".csv", ".json")
SHA256 = re.compile(r"[0-9a-f]{64}")
PATIENT_GROUP, IMAGE_GROUP = "patient ", "image "  # a row's bootstrap group: its patient, else its image


# What a results file must have, whatever else it holds: a row's name, and what calibration needs.
NEEDED_COLUMNS = ("model_sha256", "raw_output", "raw_recipe", "image_sha256", "diagnosis")
NAME_COLUMNS = ("file", "path")  # the Screen page's and `core screen`'s; an archive job's


def _table(data: bytes, name: str, what: str) -> list[dict]:
    """The rows of a CSV or JSON file (by its name's suffix); ValueError, in words for the person who
    made the file, for anything else. what: what the file should hold, for those words."""
    suffix = Path(name).suffix.lower()
    if suffix not in RESULT_SUFFIXES:
        raise ValueError(f"{name}: expected the CSV or JSON of {what}")
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet may save a byte-order mark
        # A CSV row that is only separators (a spreadsheet's trailing lines) is no row.
        rows = json.loads(text) if suffix == ".json" else [
            row for row in csv.DictReader(io.StringIO(text)) if any(_filled(v) for k, v in row.items() if k)]
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise ValueError(f"{name} is not a readable file of {what} ({type(exc).__name__})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{name}: expected the CSV or JSON of {what} (a list of rows)")
    return rows


def _columns(rows: list[dict]) -> set[str]:
    return set().union(*rows) if rows else set()


def parse_results(data: bytes, name: str) -> list[dict]:
    """The rows of a results file (CSV or JSON, by its name's suffix). ValueError, in words for the
    person who made the file, for anything else."""
    rows = _table(data, name, "screening results")
    columns = _columns(rows)
    missing = [c for c in NEEDED_COLUMNS if c not in columns] + ([] if columns & set(NAME_COLUMNS) else ["file"])
    if missing:
        raise ValueError(f"{name} has no {', '.join(missing)} column: use the results file as downloaded (saved as "
                         "CSV with commas), from this version; results of an older version cannot be used")
    return rows


def read_results(path: str | Path, diagnoses: str | Path | None = None) -> list[dict]:
    """The rows of a results file, or of an archive job's output folder (every row that counts),
    with the diagnoses of a separate file joined on where one is given (``add_diagnoses``)."""
    path = Path(path)
    try:
        if path.is_dir():
            from core.serving import archive

            rows = archive.read_results(path).to_pylist()
        else:
            rows = parse_results(path.read_bytes(), path.name)
        labelled = _diagnosis_rows(Path(diagnoses)) if diagnoses else None
    except OSError as exc:
        raise ValueError(f"cannot read {exc.filename or path}: {exc.strerror or exc}") from None
    return add_diagnoses(rows, labelled) if labelled is not None else rows


def _diagnosis_rows(path: Path) -> list[dict]:
    rows = _table(path.read_bytes(), path.name, "diagnoses")
    columns = _columns(rows)
    if "diagnosis" not in columns or not columns & {"image_sha256", *NAME_COLUMNS}:
        raise ValueError(f"{path.name}: expected a CSV or JSON of diagnoses, with a diagnosis column and an "
                         "image_sha256, path or file column naming the results' rows")
    return rows


def add_diagnoses(rows: list[dict], labelled: list[dict]) -> list[dict]:
    """The results' rows with each diagnosis (and patient) of another file: an archive's rows, whose own
    diagnosis column stays empty, with the clinic's list. Joined by image_sha256 where that list has
    it, else by the row's name (an archive's path column: relative, as given, or its pseudonym)."""
    key = "image_sha256" if any(_filled(r.get("image_sha256")) for r in labelled) else None

    def name(row: dict) -> str:
        return _filled(row.get(key) if key else (row.get("path") or row.get("file")))

    given = {name(r): r for r in labelled if name(r)}
    return [{**row, **{c: given[name(row)].get(c) for c in ("diagnosis", "patient") if c in given[name(row)]}}
            if name(row) in given else row for row in rows]


def results_model(rows: list[dict]) -> str | None:
    """The shipped model most of the rows were screened with (by name; from_results then checks each
    row's file); None where they name none of them."""
    from core.serving import registry

    known = set(registry.model_names())
    named = Counter(str(row["model"]) for row in rows if str(row.get("model")) in known).most_common(1)
    return named[0][0] if named else None


def _filled(value) -> str:
    return "" if value is None else str(value).strip()


def _unusable(row: dict, sha256: str, recipe: str) -> tuple[str, str] | None:
    """Why a results row cannot be used for the model file with this sha256 and raw recipe, as
    (count, reason); None if it can."""
    screened = (_filled(row.get("status")) == "ok") if "status" in row else not _filled(row.get("error"))
    if not screened:
        return "not_screened", "not screened: no score to calibrate"
    if _filled(row.get("model_sha256")) != sha256:
        return "other_model", (f"screened with another model file (sha256 {_filled(row.get('model_sha256'))[:12]}…, "
                               f"this one's is {sha256[:12]}…)")
    if _filled(row.get("raw_recipe")) != recipe:
        return "other_model", "screened with other test-time zooms or decoding of this model file"
    diagnosis = _filled(row.get("diagnosis")).lower()
    if not diagnosis:
        return "unlabelled", "no diagnosis yet"
    if diagnosis not in DIAGNOSES:
        return "unreadable", f"diagnosis '{_filled(row.get('diagnosis'))}' is not NORMAL or PNEUMONIA"
    try:
        output = float(_filled(row.get("raw_output")))
    except ValueError:
        output = float("nan")
    if not 0.0 <= output <= 1.0 or not SHA256.fullmatch(_filled(row.get("image_sha256")).lower()):
        return "unreadable", "no raw output or image sha256 (results of an older version: screen the image again)"
    return None


def from_results(predictor: Predictor, rows: list[dict]) -> LocalSet:
    """The labelled set in screening results: rows of this model file that were screened and have a
    diagnosis, each image (by sha256) once. Every other row is counted and listed with why, never used."""
    raw, labels, patients, hashes, names, refused = [], [], [], [], [], []
    counts = dict.fromkeys(("not_screened", "other_model", "unlabelled", "unreadable"), 0)
    for number, row in enumerate(rows, 1):
        name = _filled(row.get("file") or row.get("path")) or f"row {number}"
        problem = _unusable(row, predictor.card.sha256, predictor.raw_recipe)
        if problem:
            counts[problem[0]] += 1
            refused.append((name, problem[1]))
            continue
        digest, patient = _filled(row["image_sha256"]).lower(), _filled(row.get("patient"))
        raw.append(float(_filled(row["raw_output"])))
        labels.append(DIAGNOSES[_filled(row["diagnosis"]).lower()])
        # Distinct prefixes: a patient called like an image's hash is still another group.
        patients.append(f"{PATIENT_GROUP}{patient}" if patient else f"{IMAGE_GROUP}{digest}")
        hashes.append(digest)
        names.append(name)
    local = one_per_image(LocalSet(np.asarray(raw, np.float64), np.asarray(labels, np.int64), patients, hashes,
                                   refused), names)
    given = sum(p.startswith(PATIENT_GROUP) for p in local.patients)
    local.resampled_by = ("patient" if given == len(local.patients) else "image" if given == 0
                          else "patient where the patient column is filled, else image")
    local.source = {**local.source, "kind": "results", "rows": len(rows), **counts, "used": len(local.image_hashes),
                    "patients_given": given}
    return local


def sensitivity_lower_bound(probabilities: np.ndarray, labels: np.ndarray, patients: list[str],
                            confidence: float = CONFIDENCE, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(candidate thresholds, descending; the bootstrap lower bound of sensitivity at each)."""
    positive = np.flatnonzero(labels == 1)
    order = positive[np.argsort(-probabilities[positive], kind="stable")]
    scores = probabilities[order]
    weights = evaluation.patient_resample_weights([patients[i] for i in order], rounds, seed)
    # Caught at threshold t = every positive scoring >= t: a running sum in descending order.
    sensitivity = np.cumsum(weights, axis=1) / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    bound = np.quantile(sensitivity, 1.0 - confidence, axis=0)
    # Tied scores share a threshold: keep the last (most inclusive) position of each.
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    return scores[last_of_tie], bound[last_of_tie]


def screening_threshold(probabilities: np.ndarray, labels: np.ndarray, patients: list[str], target: float,
                        confidence: float = CONFIDENCE) -> float | None:
    """The highest threshold whose sensitivity lower bound meets the target, or None."""
    thresholds, bound = sensitivity_lower_bound(probabilities, labels, patients, confidence)
    meets = np.flatnonzero(bound >= target)
    return evaluation.between_scores(probabilities, float(thresholds[meets[0]])) if meets.size else None


def _point(labels, probabilities, threshold, patients, intervals: bool = True) -> dict:
    at = evaluation.metrics_at(labels, probabilities, threshold)
    intervals = evaluation.bootstrap_intervals(labels, probabilities, threshold, patients) if intervals else {}
    return {"threshold": float(threshold), "sensitivity": at["sensitivity"],
            "sensitivity_95ci": intervals.get("sensitivity"), "specificity": at["specificity"],
            "specificity_95ci": intervals.get("specificity"), "confusion": at["confusion"]}


def calibrate(predictor: Predictor, local: LocalSet, target: float = evaluation.SCREENING_SENSITIVITY,
              site_name: str = "site", intervals: bool = True) -> tuple[dict, list[str]]:
    """(the sealed site profile's content, advice for the analyst); intervals=False skips the
    95% intervals of the table (for simulations that calibrate many times)."""
    local = local.canonical()
    labels, raw = local.labels, local.raw
    counts = {name: int((labels == i).sum()) for i, name in enumerate(CLASS_NAMES)}
    if min(counts.values()) == 0:
        raise ValueError("site calibration needs X-rays of both classes "
                         f"({', '.join(f'{n} {c}' for c, n in counts.items())} readable)")
    advice = []
    shipped_calibration = predictor.card.calibration
    if min(counts.values()) >= MIN_CALIBRATION_PER_CLASS:
        calibration = {**evaluation.fit_calibration(labels, raw), "source": "site"}
    else:
        calibration = {**(shipped_calibration or {"method": "none"}), "source": "shipped"}
        advice.append(f"Calibration kept as shipped: refitting needs at least {MIN_CALIBRATION_PER_CLASS} "
                      "images of each class.")
    site_calibration = calibration if calibration.get("method") == "platt" else None
    probabilities = evaluation.apply_calibration(raw, site_calibration)
    shipped_probabilities = evaluation.apply_calibration(raw, shipped_calibration)

    needed = images_needed(target)
    sufficient = counts["PNEUMONIA"] >= needed
    balanced = evaluation.choose_operating_points(labels, probabilities)["balanced"]
    screening_point = screening_threshold(probabilities, labels, local.patients, target)
    if not sufficient:
        advice.append(f"{counts['PNEUMONIA']} pneumonia images cannot show a sensitivity of {target:.2f} with "
                      f"{CONFIDENCE:.0%} confidence: at least {needed} would (with none missed). The screening "
                      "point is kept no higher than the shipped one until more local images are added.")
        # Mapped into the site's calibrated scale: the same raw score as the shipped threshold.
        shipped_raw = _raw_at(predictor.operating_points["screening"], shipped_calibration)
        shipped_here = float(evaluation.apply_calibration(np.array([shipped_raw]), site_calibration)[0])
        screening_point = min(screening_point if screening_point is not None else shipped_here, shipped_here)
    elif screening_point is None:
        screening_point = float(probabilities[labels == 1].min())
    screening_point = min(screening_point, balanced)  # screening never misses more than balanced

    points = {"screening": screening_point, "balanced": balanced}
    metrics = {
        "shipped": {name: _point(labels, shipped_probabilities, threshold, local.patients, intervals)
                    for name, threshold in predictor.card.operating_points.items()},
        "site": {name: _point(labels, probabilities, threshold, local.patients, intervals)
                 for name, threshold in points.items()},
    }
    content = seal({
        "site": site_name,
        "model": predictor.name,
        "model_sha256": predictor.card.sha256,
        # What the raw outputs were made with: a profile is refused once the card's zooms or the decoding change.
        "raw_recipe": getattr(predictor, "raw_recipe", None),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": TOOL_VERSION,
        "sensitivity_target": target,
        "confidence": CONFIDENCE,
        "counts": {**counts, "patients": len(set(local.patients)), "refused": len(local.refused)},
        "resampled_by": local.resampled_by,
        "made_from": local.source,
        # A digest of the set: its (image sha256, label) pairs; no names, pixels or tags.
        "set_sha256": local.set_digest(),
        "calibration": calibration,
        "operating_points": points,
        "metrics": metrics,
        "sample_size": {"pneumonia_images": counts["PNEUMONIA"], "needed": needed, "sufficient": sufficient},
        "advice": advice,
    })
    return content, advice


def _raw_at(probability: float, calibration: dict | None) -> float:
    """The raw model output whose calibrated probability is the given one (Platt is invertible)."""
    if not calibration:
        return probability
    return float(evaluation.sigmoid((evaluation.logit(np.array([probability]))[0] - calibration["intercept"])
                                    / calibration["slope"]))


def to_profile(content: dict) -> SiteProfile:
    return SiteProfile.from_content(content, content["site"])


def site_probabilities(local: LocalSet, content: dict) -> np.ndarray:
    """The local images' probabilities under the profile's calibration."""
    return evaluation.apply_calibration(local.raw, to_profile(content).calibration)


def table(content: dict) -> str:
    """The shipped and the site's operating points on the site's images, with 95% intervals."""

    def interval(values) -> str:
        return f"({values[0]:.3f}-{values[1]:.3f})" if values else ""

    counts = content["counts"]
    lines = [(f"site '{content['site']}', model {content['model']} ({content['model_sha256'][:12]}…): "
              f"{counts['NORMAL']} NORMAL and {counts['PNEUMONIA']} PNEUMONIA images of {counts['patients']} "
              f"patients, {counts['refused']} not used; calibration {content['calibration']['source']}"),
             f"{'points':<9}{'point':<11}{'threshold':>10}  {'sensitivity (95% CI)':<24}{'specificity (95% CI)':<24}"]
    made = content.get("made_from", {})
    if made.get("kind") == "results":
        lines.insert(1, f"made from screening results: {made['used']} of {made['rows']} rows used "
                        f"({made['unlabelled']} without a diagnosis, {made['other_model']} of another model file, "
                        f"{made['not_screened']} not screened, {made['unreadable']} unreadable, "
                        f"{made['repeated']} repeated images, {made['conflicting']} given both diagnoses); "
                        f"resampled by {content['resampled_by']}")
    for source in ("shipped", "site"):
        for name, point in content["metrics"][source].items():
            lines.append(f"{source:<9}{name:<11}{point['threshold']:>10.4f}  "
                         f"{point['sensitivity']:.3f} {interval(point['sensitivity_95ci']):<18}"
                         f"{point['specificity']:.3f} {interval(point['specificity_95ci']):<18}")
    lines.append("Both are measured on the images the site's points were fitted on: the site's figures are "
                 "optimistic; new patients will do somewhat worse.")
    return "\n".join(lines)
