"""The model card: a model's metadata kept beside its weights (as torchxrayvision keeps labels,
thresholds and input resolution with its weights): what input it expects, how it was trained,
how good it was on validation, its operating points and which files it is. Stored as NAME.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from core.serving.imaging import PreprocessSpec
from core.serving.settings import CLASS_NAMES

INTENDED_USE = "Screening aid for paediatric chest X-rays; a clinician makes the diagnosis."


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    description: str
    preprocess: dict  # PreprocessSpec.to_dict()
    operating_points: dict  # name -> threshold on the calibrated probability
    training: dict  # command, recipe, data counts, split, time, hardware, versions
    validation: dict  # metrics on the patient-level validation split, with bootstrap intervals
    created: str = ""
    parameters: int = 0
    labels: list = field(default_factory=lambda: list(CLASS_NAMES))
    output: str = "sigmoid probability of PNEUMONIA, then Platt calibration fitted on validation"
    test_time_zooms: list = field(default_factory=lambda: [1.0])
    calibration: dict | None = None
    intended_use: str = INTENDED_USE
    file: str = ""  # NAME.keras, and its size and sha256
    file_bytes: int = 0
    sha256: str = ""
    onnx: dict | None = None  # the serving file: file, file_bytes, sha256, heatmap
    # Reports added after training, each under its own name: input_check, lung_focus, levers…
    reports: dict = field(default_factory=dict)

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocess)

    @property
    def summary(self) -> str:
        """The architecture's description, then what this file's own training added to it."""
        spec, recipe, members = self.spec, self.training.get("recipe", {}), self.training.get("ensemble")
        source = self.training.get("fine_tuned_from")
        added = [
            f"every X-ray cut to the localiser's standard frame ({spec.frame_side:.0%})" if spec.frame else "",
            "grey levels histogram-equalised" if spec.equalise else "",
            "augmented before CLAHE" if recipe.get("augment_before_contrast") else "",
            f"sharpened at {len(recipe['sharpness_widths'])} scales" if recipe.get("sharpness_widths") else "",
            f"exposure augmented up to gamma {recipe['max_gamma']}" if recipe.get("max_gamma") else "",
            f"reflected light added to {recipe['reflections']:.0%} of training images" if recipe.get("reflections") else "",
            f"reflections up to {recipe['reflection_peak']:.0%} of white" if recipe.get("reflection_peak") else "",
            "what reflections saturate filled as screening fills it" if recipe.get("reflection_fill") else "",
            "the epoch picked on validation X-rays lit and plain" if recipe.get("lit_validation") else "",
            f"weights averaged (momentum {recipe['weight_average']})" if recipe.get("weight_average") else "",
            f"early stopping from epoch {recipe['patience_from_epoch']}" if recipe.get("patience_from_epoch") else "",
            f"SimCLR pre-training ({recipe['pretrain_epochs']} epochs)" if recipe.get("pretrain_epochs") else "",
            f"ensemble of {members['members']} initialisations" if members else "",
            f"fine-tuned from {source['model']}" if source else "",
        ]
        return "; ".join([self.description, *filter(None, added)])

    @property
    def split_seed(self) -> int:
        """The seed of the patient-level split this model was trained and validated on."""
        return int(self.training["split"]["seed"])

    @classmethod
    def from_dict(cls, value: dict) -> ModelCard:
        known = {f.name for f in fields(cls)} - {"reports"}
        return cls(**{k: v for k, v in value.items() if k in known},
                   reports={k: v for k, v in value.items() if k not in known})

    def to_dict(self) -> dict:
        """The card as stored: reports sit beside the fields, as top-level sections."""
        stored = asdict(self)
        return {**{k: v for k, v in stored.items() if k != "reports"}, **stored["reports"]}

    def with_section(self, section: str, value) -> ModelCard:
        """The card with one field or report set (the model files, and so their hashes, unchanged)."""
        if section in {f.name for f in fields(self)} - {"reports"}:
            return replace(self, **{section: value})
        return replace(self, reports={**self.reports, section: value})
