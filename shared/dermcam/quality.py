"""Is the photograph good enough to be read at all? NumPy checks made before the model.

A photograph that is too small, too dark, washed out or blurred gets no diagnosis: the
model was trained on none like it, and its answer would look as confident as any other.
Each figure is measured on the upright photo at a fixed scale (long side `SIDE`), so the
same photograph scores the same whatever size it was sent at. The bounds were set on real
dermoscopy (../shared/data/isic-uda1: every one of its 528 photographs passes) against
degraded copies of those photographs (docs/TRUST.md, "Quality checks"). Dermoscopy is soft:
a fifth of isic-uda1 is as smooth as a blurred copy of another, so "too blurred" catches
only blur beyond any real photograph there, not every blurred one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

SIDE = 256  # the scale every figure is measured at


@dataclass(frozen=True)
class Bounds:
    """Where a photograph stops being readable; the defaults are measured on isic-uda1, and
    model_store.calibrate records them in the trust block (a clinic can set its own)."""

    min_side: int = 64  # px of the upload's short side: below it no lesion detail is left
    min_luminance: float = 45.0  # mean luma, 0-255: isic-uda1 is never below 77
    max_clipped: float = 0.25  # share of pixels with every channel >= 250: isic-uda1 <= 0.05
    min_sharpness: float = 0.3  # variance of the Laplacian of luma: isic-uda1 >= 0.42

    @classmethod
    def from_block(cls, block: dict[str, Any]) -> Bounds:
        return cls(
            min_side=int(block["min_side"]),
            min_luminance=float(block["min_luminance"]),
            max_clipped=float(block["max_clipped"]),
            min_sharpness=float(block["min_sharpness"]),
        )

    def block(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Quality:
    short_side: int
    luminance: float
    clipped: float
    sharpness: float

    def problem(self, bounds: Bounds) -> str | None:
        """The reason to decline, in the words the answer uses, or None."""
        if self.short_side < bounds.min_side:
            return "too small"
        if self.luminance < bounds.min_luminance:
            return "too dark"
        if self.clipped > bounds.max_clipped:
            return "over-exposed"
        if self.sharpness < bounds.min_sharpness:
            return "too blurred"
        return None

    def figures(self) -> dict[str, float]:
        return {
            "short_side": self.short_side,
            "luminance": round(self.luminance, 2),
            "clipped": round(self.clipped, 4),
            "sharpness": round(self.sharpness, 2),
        }


def _scaled(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Rec. 601 luma and RGB of an image at long side SIDE, float32 0-255."""
    scale = SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32)
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32), rgb


def measure(image: Image.Image, width: int, height: int) -> Quality:
    """The figures of one upright RGB photograph; `width`, `height` are the upload's."""
    gray, rgb = _scaled(image)
    if min(gray.shape) >= 3:
        lap = (
            gray[:-2, 1:-1]
            + gray[2:, 1:-1]
            + gray[1:-1, :-2]
            + gray[1:-1, 2:]
            - 4 * gray[1:-1, 1:-1]
        )
        sharpness = float(lap.var())
    else:
        sharpness = 0.0
    return Quality(
        short_side=min(width, height),
        luminance=float(gray.mean()),
        clipped=float((rgb.min(axis=-1) >= 250).mean()),
        sharpness=sharpness,
    )
