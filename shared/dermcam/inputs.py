"""A request's model inputs, by name: the image tensor, and whatever else the model takes.

Every field of a request that is not one of the functions' own options (`class`, `method`,
`composite`) is patient metadata, encoded by the model's schema (`metadata`); a field the
model does not take is refused, so a typo is never silently ignored. Everything keyed by the
image (heatmap objects, the `cached` answer) is keyed by image + encoded metadata: the same
photo with another age is another explanation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dermcam import imaging
from dermcam.errors import InvalidMetadata
from dermcam.manifest import Manifest

FUNCTION_OPTIONS = ("class", "method", "composite")


@dataclass(frozen=True)
class ModelInputs:
    image: np.ndarray  # float32 [1, H, W, 3], RGB 0–255
    extras: dict[str, np.ndarray]  # the model's other inputs by name (empty: image only)
    metadata: dict[str, dict[str, Any]] | None  # per field: as given, as used, defaulted
    key: str  # what names this input: the image's sha256, plus the metadata's digest

    def answer(self) -> dict[str, Any]:
        """What every answer echoes (nothing for an image-only model)."""
        return {} if self.metadata is None else {"metadata": self.metadata}


def metadata_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in FUNCTION_OPTIONS}


def image_input(manifest: Manifest) -> imaging.ModelInput:
    """What `imaging.decode` must make for this model: its size and its training resize."""
    return imaging.ModelInput(manifest.height, manifest.width, manifest.resize)


def model_inputs(
    manifest: Manifest, decoded: imaging.DecodedImage, options: Mapping[str, Any]
) -> ModelInputs:
    """The named inputs for one request (`decoded` made for this model's `image_input`).
    Raises InvalidMetadata (422)."""
    tensor = decoded.tensor
    if tensor is None:
        raise ValueError("decode the image with the model's image_input first")
    fields = metadata_fields(options)
    if manifest.metadata is None:
        if fields:
            raise InvalidMetadata(
                f"Unknown field {', '.join(repr(f) for f in sorted(fields))}: this model takes "
                f"only the image (and the options {', '.join(FUNCTION_OPTIONS)})."
            )
        return ModelInputs(tensor, {}, None, decoded.sha256)
    encoded = manifest.metadata.encode(fields)
    return ModelInputs(tensor, encoded.inputs, encoded.used, f"{decoded.sha256}-m{encoded.digest}")


def warmup_extras(manifest: Manifest) -> dict[str, np.ndarray]:
    """Valid extra inputs for a warmup inference."""
    return manifest.metadata.example().inputs if manifest.metadata else {}
