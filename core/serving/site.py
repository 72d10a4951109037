"""Site profiles: a clinic's own operating points and calibration for one model file.

Made by ``python -m core calibrate-site`` (``core.analysis.site_calibration``)
from the clinic's labelled X-rays. A profile holds thresholds, calibration,
counts, intervals and a digest of the image set; never file names, pixels or
DICOM tags. It is refused for any other model file, and when edited by hand
(its own digest no longer matches its content).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from core.serving import registry
from core.serving.card import ModelCard

SITES_DIR = "sites"  # beside the models: models/sites/*.json are offered on the Screen page
FORMAT = "cxr-site-profile/1"


class SiteProfileError(ValueError):
    """A profile that cannot be used: for another model, edited, or not a profile."""


def content_digest(content: dict) -> str:
    """sha256 of the profile's canonical JSON without its own digest."""
    body = {k: v for k, v in content.items() if k != "profile_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class SiteProfile:
    name: str
    content: dict

    @property
    def model(self) -> str:
        return self.content["model"]

    @property
    def operating_points(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.content["operating_points"].items()}

    @property
    def calibration(self) -> dict | None:
        calibration = self.content.get("calibration") or {}
        return calibration if calibration.get("method") == "platt" else None

    @classmethod
    def from_content(cls, content: dict, name: str) -> SiteProfile:
        """A profile from its JSON content, checked for form and integrity."""
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise SiteProfileError(f"site profile '{name}' is not a site profile ({FORMAT})")
        if content.get("profile_sha256") != content_digest(content):
            raise SiteProfileError(f"site profile '{name}' has been edited since it was made "
                                   "(its digest does not match its content): make a new one with calibrate-site")
        points = content.get("operating_points", {})
        if not all(isinstance(points.get(k), (int, float)) and 0.0 <= points[k] <= 1.0
                   for k in ("screening", "balanced")):
            raise SiteProfileError(f"site profile '{name}' lacks valid screening and balanced thresholds")
        return cls(name, content)

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> SiteProfile:
        try:
            content = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SiteProfileError(f"site profile '{name}' is not valid JSON") from exc
        return cls.from_content(content, name)

    @classmethod
    def load(cls, path: str | Path) -> SiteProfile:
        path = Path(path)
        if not path.is_file():
            raise SiteProfileError(f"no site profile at {path}")
        return cls.from_bytes(path.read_bytes(), path.stem)

    def check_model(self, card: ModelCard) -> None:
        """Refuse a profile made for another model, or for another file of the same name."""
        if self.model != card.name:
            raise SiteProfileError(f"site profile '{self.name}' was made for model '{self.model}', "
                                   f"not '{card.name}'")
        if self.content.get("model_sha256") != card.sha256:
            raise SiteProfileError(f"site profile '{self.name}' was made for another file of model "
                                   f"'{self.model}' (sha256 {str(self.content.get('model_sha256'))[:12]}…, "
                                   f"this one {card.sha256[:12]}…): calibrate the site again")


def seal(content: dict) -> dict:
    """The content with its digest added, ready to write."""
    body = {k: v for k, v in content.items() if k != "profile_sha256"}
    return {**body, "format": FORMAT, "profile_sha256": content_digest({**body, "format": FORMAT})}


def sites_dir(directory: Path | None = None) -> Path:
    return (directory or registry.models_dir()) / SITES_DIR


def shipped_profiles(directory: Path | None = None) -> list[Path]:
    """The profiles in the sites folder beside the models."""
    folder = sites_dir(directory)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
