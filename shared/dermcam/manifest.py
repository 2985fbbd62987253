"""The model directory's manifest.json: what was exported, and proof the files are intact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermcam import resize
from dermcam.errors import ModelUnavailable
from dermcam.metadata import Schema, SchemaError, parse_schema
from dermcam.trust import Trust, read_trust

MANIFEST = "manifest.json"
ARTIFACTS = ("predict", "gradcam")


@dataclass(frozen=True)
class Label:
    code: str
    name: str
    description: str = ""  # what the class is, in words a reader of the page understands


@dataclass(frozen=True)
class Manifest:
    """The parts of manifest.json the serving path reads; `raw` keeps the rest."""

    directory: Path
    name: str
    version: str
    demo: bool
    height: int
    width: int
    labels: tuple[Label, ...]
    target_layer: str
    score: str
    quantization: str
    probabilities: str  # "exclusive" (they sum to 1) or "independent" (multi-label)
    resize: str  # how the training pipeline decoded and resized (dermcam.resize)
    metadata: Schema | None  # the patient fields beside the image, when the model takes any
    trust: Trust | None  # calibration, operating points, sets (model_store.calibrate), if any
    raw: dict[str, Any]

    @property
    def codes(self) -> list[str]:
        return [label.code for label in self.labels]

    def artifact_path(self, kind: str) -> Path:
        return self.directory / self.raw["artifacts"][kind]["file"]

    @property
    def card(self) -> dict[str, Any] | None:
        """The model card the exporter was given (what it is, its data, licence, figures)."""
        return self.raw.get("card") or None

    def summary(self) -> dict[str, Any]:
        """The `model` object every answer carries."""
        return {
            "name": self.name,
            "version": self.version,
            "demo": self.demo,
            "probabilities": self.probabilities,
            "calibrated": self.trust is not None,
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir: str | Path) -> Manifest:
    """Parse manifest.json. Raises ModelUnavailable when it is missing or malformed."""
    directory = Path(model_dir)
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_text())
        return Manifest(
            directory=directory,
            name=str(raw["name"]),
            version=str(raw["version"]),
            demo=bool(raw.get("demo", False)),
            height=int(raw["input"]["height"]),
            width=int(raw["input"]["width"]),
            labels=tuple(
                Label(str(x["code"]), str(x["name"]), str(x.get("description") or ""))
                for x in raw["labels"]
            ),
            target_layer=str(raw["target_layer"]),
            score=str(raw["score"]),
            quantization=str(raw.get("quantization", "none")),
            probabilities=str((raw.get("head") or {}).get("probabilities", "exclusive")),
            resize=resize.check(str(raw["input"].get("resize", resize.DEFAULT))),
            metadata=parse_schema(raw["metadata"]) if raw.get("metadata") else None,
            trust=read_trust(raw, [str(x["code"]) for x in raw["labels"]], directory),
            raw=raw,
        )
    except FileNotFoundError as exc:
        raise ModelUnavailable(f"No model manifest at {path}.") from exc
    except (OSError, ValueError, KeyError, TypeError, SchemaError) as exc:
        raise ModelUnavailable(f"The model manifest at {path} is unreadable: {exc}") from exc


def verify_artifact(manifest: Manifest, kind: str) -> Path:
    """Path of an artifact whose sha256 matches the manifest; ModelUnavailable otherwise."""
    entry = manifest.raw.get("artifacts", {}).get(kind)
    if not entry:
        raise ModelUnavailable(f"The model has no {kind} artifact.")
    path = manifest.artifact_path(kind)
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelUnavailable(f"The {kind} artifact {path.name} cannot be read.") from exc
    if actual != entry["sha256"]:
        raise ModelUnavailable(
            f"The {kind} artifact {path.name} does not match its checksum; refusing to serve it."
        )
    return path
