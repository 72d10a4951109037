"""The Predictor: a loaded model with its card, turning image bytes into a result.

Screening runs the model's ONNX export in ONNX Runtime and imports no
TensorFlow; the Keras file is loaded only when an analyst view asks for it
(``Predictor.model``) or when a model has no export yet. The Keras runtime is
offered from the learning layer above (``offer_keras_runtime``): serving never
imports it.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from core.serving import framing, registry, tta
from core.serving.calibration import apply_calibration
from core.serving.card import ModelCard
from core.serving.framing import FrameBox
from core.serving.heatmap import member_mean, occlusion
from core.serving.imaging import ImageError, ModelInput, load_model_input
from core.serving.photo import display_copy
from core.serving.quality import XrayDetector, check_chest_xray
from core.serving.settings import CLASS_NAMES, DEFAULT_OPERATING_POINT, PIPELINE_VERSION
from core.serving.site import SiteProfile, SiteProfileError

RUNTIMES = ("onnx", "keras")
# (name, models folder) -> a network with forward, has_cam and the Keras model as .model; set by
# core.learning when it is imported, as serving may not import the TensorFlow layer above it.
KerasLoader = Callable[[str, Path | None], object]
_keras_loader: KerasLoader | None = None


def offer_keras_runtime(loader: KerasLoader) -> None:
    """Make runtime "keras" and ``Predictor.model`` available, loading through ``loader``."""
    global _keras_loader
    _keras_loader = loader


def _keras_network(name: str, directory: Path | None):
    if _keras_loader is None:
        raise RuntimeError(f"the Keras runtime for '{name}' comes from the learning layer (TensorFlow): "
                           "import core.learning first")
    return _keras_loader(name, directory)


@dataclass
class ScreeningResult:
    """One screened image. A screening aid: a clinician makes the diagnosis."""

    probability: float  # calibrated probability of pneumonia
    label: str  # at the operating point below
    operating_point: str
    threshold: float
    model: str
    model_sha256: str = ""
    site: str | None = None  # the site profile whose operating points are in force, if any
    input_kind: str = "digital"  # digital, dicom, photo (of a film, straightened) or screenshot
    # What site calibration needs from a result, never pixels: the model's own output before
    # calibration (averaged over its test-time zooms), how it was made (Predictor.raw_recipe) and
    # the image file's sha256.
    raw_output: float | None = None
    raw_recipe: str = ""
    image_sha256: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # For display only, never exported: the decoded image and, when asked for, its heat map.
    image: np.ndarray | None = field(default=None, repr=False)
    picture: np.ndarray | None = field(default=None, repr=False)  # a photo or screenshot as sent, shrunk
    heatmap: np.ndarray | None = field(default=None, repr=False)
    frame: FrameBox | None = field(default=None, repr=False)  # the part of the image the model read

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("image", "picture", "heatmap", "frame")}


class Predictor:
    """Thread-safe: one model, shared by every session of the dashboard."""

    def __init__(self, network, card: ModelCard, detector: XrayDetector | None = None,
                 site: SiteProfile | None = None, directory: Path | None = None, runtime: str = "onnx"):
        self.network = network  # OnnxNetwork, or what the Keras loader offered gives
        self.runtime = runtime
        self.card = card
        self.detector = detector
        self.site = site
        self.directory = directory
        self.name: str = card.name
        self.spec = card.spec
        self.test_time_zooms: list[float] = list(card.test_time_zooms)
        # A site profile replaces the calibration and operating points fitted at the training hospital.
        self.calibration: dict | None = site.calibration if site else card.calibration
        self.operating_points: dict[str, float] = dict(site.operating_points if site else card.operating_points)
        self._keras_model = None
        self._keras_lock = threading.Lock()

    @classmethod
    def load(cls, name: str | None = None, directory: Path | None = None, runtime: str = "onnx",
             site: SiteProfile | None = None, threads: int | None = None) -> Predictor:
        """The named (else the default) model, hash-checked. runtime "onnx" falls back to
        Keras (and TensorFlow) only for a model that has no ONNX export. threads: ONNX Runtime's
        threads per forward pass (default: one per core; a Ray actor gets its own CPUs' worth)."""
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime '{runtime}'; choose from {', '.join(RUNTIMES)}")
        card = registry.load_card(name or registry.default_model_name(directory), directory)
        if card.spec.frame:  # refused now, not at the first image, when the localiser is missing or another
            framing.localiser(card.spec.frame)
        if runtime == "onnx" and card.onnx:
            from core.serving.network import OnnxNetwork

            network = OnnxNetwork(registry.verified_path(card.onnx["file"], card.onnx["sha256"], directory), threads)
        else:
            runtime = "keras"
            network = _keras_network(card.name, directory)
        predictor = cls(network, card, registry.load_detector(directory), None, directory, runtime)
        return predictor.with_site(site) if site else predictor

    @property
    def raw_recipe(self) -> str:
        """sha256 of what turns a file into this model file's raw output besides the file itself: the
        preprocessing, the test-time zooms and the decoding (`core calibrate` can rewrite the card's
        zooms and leave the model file, and its sha256, as they were)."""
        recipe = {"zooms": self.test_time_zooms, "spec": self.spec.to_dict(), "decoding": PIPELINE_VERSION}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()

    def with_site(self, site: SiteProfile) -> Predictor:
        """The same loaded model at a site profile's operating points and calibration (the network
        is shared, not loaded again); refuses a profile made for another model file."""
        site.check_model(self.card)
        made_with = site.content.get("raw_recipe")
        if made_with and made_with != self.raw_recipe:
            raise SiteProfileError(f"site profile '{site.name}' was fitted on outputs of another preprocessing, test-time "
                                   f"zooms or decoding of '{self.name}' than it now has: calibrate the site again")
        return Predictor(self.network, self.card, self.detector, site, self.directory, self.runtime)

    def with_test_time_zooms(self, zooms: list[float]) -> Predictor:
        """The same loaded model averaged over other framings (the network is shared, this one unchanged)."""
        other = Predictor(self.network, self.card, self.detector, self.site, self.directory, self.runtime)
        other.test_time_zooms = list(zooms)
        return other

    @property
    def model(self):
        """The Keras model, for analyst views (Grad-CAM layers, activations, occlusion); loads TensorFlow."""
        with self._keras_lock:
            if self._keras_model is None:
                network_model = getattr(self.network, "model", None)
                self._keras_model = (network_model if network_model is not None
                                      else _keras_network(self.name, self.directory).model)
            return self._keras_model

    def _forward(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw probabilities averaged over the test-time zooms, and the unzoomed views' class
        activation maps (N, members, h, w) where the network gives them."""
        probabilities, cams = self.network.forward(tta.views(inputs, self.test_time_zooms))
        if cams is not None and 1.0 in self.test_time_zooms:
            first = self.test_time_zooms.index(1.0) * len(inputs)
            cams = cams[first:first + len(inputs)]
        else:
            cams = None
        return tta.average(probabilities, self.test_time_zooms), cams

    def raw_probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """The model's sigmoid outputs (averaged over its test-time zooms) for a preprocessed batch."""
        return self._forward(inputs)[0]

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """Pneumonia probabilities from raw outputs, at this predictor's (or its site's) calibration."""
        return apply_calibration(raw, self.calibration)

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Calibrated pneumonia probabilities for a batch of preprocessed inputs."""
        return self.calibrated(self.raw_probabilities(inputs))

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """Where the model sees pneumonia in one (H, W, 1) input: (H, W) in [0, 1]."""
        cams = self._forward(image[np.newaxis])[1] if self.network.has_cam else None
        return self._heatmap_from(cams, image)

    def _heatmap_from(self, cams: np.ndarray | None, image: np.ndarray) -> np.ndarray:
        """The map from a forward pass's class activation maps, else occlusion sensitivity (a
        network without a global-pooling head): both without gradients, so without TensorFlow."""
        if cams is not None:
            return member_mean(cams[0], image.shape[:2])
        return self.occlusion(image)

    def occlusion(self, image: np.ndarray) -> np.ndarray:
        """Occlusion sensitivity of the network's raw output for one (H, W, 1) input as given (one
        view, not the test-time zooms): works for any network."""
        return occlusion(lambda batch: self.network.forward(batch)[0], image)

    def prepare(self, data: bytes) -> tuple[ModelInput, float, list[str]]:
        """Decode, check and preprocess one image, as screening does before the forward pass:
        (the model's input, when decoding ended (perf_counter), quality warnings). Raises
        ImageError (NotChestXRayError for what is not a chest X-ray)."""
        loaded = load_model_input(data, self.spec)
        decoded_at = time.perf_counter()
        try:
            return loaded, decoded_at, check_chest_xray(loaded.decoded, self.detector)
        except ImageError as exc:
            exc.input_kind = loaded.decoded.input_kind  # a refused photo's row still says it was a photo
            raise

    def label_for(self, probability: float, operating_point: str = DEFAULT_OPERATING_POINT) -> str:
        return CLASS_NAMES[int(probability >= self.operating_points[operating_point])]

    def rescore(self, result: ScreeningResult, operating_point: str = DEFAULT_OPERATING_POINT) -> ScreeningResult:
        """A result of this model file at this predictor's calibration and operating point (a site
        profile's, say) from its stored raw output: no forward pass. ValueError for another model's."""
        if (result.model_sha256, result.raw_recipe) != (self.card.sha256, self.raw_recipe) or result.raw_output is None:
            raise ValueError(f"this result was screened with another file, zooms or decoding of the model than "
                             f"{self.name}'s ({self.card.sha256[:12]}…): screen the image again")
        probability = float(self.calibrated(np.array([result.raw_output]))[0])
        return replace(result, probability=probability, label=self.label_for(probability, operating_point),
                       operating_point=operating_point, threshold=float(self.operating_points[operating_point]),
                       site=self.site.name if self.site else None)

    def screen(self, data: bytes, operating_point: str = DEFAULT_OPERATING_POINT,
               heatmap: bool = False) -> ScreeningResult:
        """Screen one image given as bytes; raises ImageError for input that cannot be screened."""
        if operating_point not in self.operating_points:
            raise ValueError(f"unknown operating point '{operating_point}'; "
                             f"choose from {', '.join(self.operating_points)}")
        started = time.perf_counter()
        loaded, decoded_at, warnings = self.prepare(data)
        inputs = loaded.tensor[np.newaxis]
        prepared_at = time.perf_counter()
        raw, cams = self._forward(inputs)
        probability = float(self.calibrated(raw)[0])
        finished = time.perf_counter()
        heat = self._heatmap_from(cams, inputs[0]) if heatmap else None
        if heat is not None and self.spec.frame:
            heat = loaded.in_image(heat)  # the model saw only the standard frame: show the map there
        return ScreeningResult(
            probability=probability,
            label=self.label_for(probability, operating_point),
            operating_point=operating_point,
            threshold=float(self.operating_points[operating_point]),
            model=self.name,
            model_sha256=self.card.sha256,
            site=self.site.name if self.site else None,
            input_kind=loaded.decoded.input_kind,
            raw_output=float(raw[0]),
            raw_recipe=self.raw_recipe,
            image_sha256=hashlib.sha256(data).hexdigest(),
            timings_ms={"decode_and_preprocess": 1e3 * (decoded_at - started),
                        "checks": 1e3 * (prepared_at - decoded_at),
                        "inference": 1e3 * (finished - prepared_at), "total": 1e3 * (finished - started)},
            warnings=warnings,
            image=loaded.decoded.pixels,
            picture=display_copy(loaded.decoded.straightened.picture) if loaded.decoded.straightened else None,
            heatmap=heat,
            frame=loaded.frame,
        )
