"""What an artefact is drawn on: the picture, the lesion it must stay off, a seeded random
source, a strength, and the look it was drawn with; and the two ways overlays are laid on
skin (over it, or multiplied into it as ink stains it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from model_store.evaluation.audit.lesion import box_blur, grow


@dataclass
class Canvas:
    picture: np.ndarray  # [h, w, 3] uint8
    lesion: np.ndarray  # [h, w] bool
    rng: np.random.Generator
    strength: float = 1.0
    look: dict = field(default_factory=dict)  # how the artefact was drawn (ink: its family)

    @property
    def size(self) -> tuple[int, int]:
        return self.picture.shape[1], self.picture.shape[0]

    @property
    def unit(self) -> float:
        """One percent of the shorter side, in pixels."""
        return min(self.size) / 100

    def off_lesion(self, margin: float = 2.0) -> np.ndarray:
        return ~grow(self.lesion, max(1, round(margin * self.unit)))

    def free_point(self) -> tuple[float, float]:
        """A random point off the lesion (x, y)."""
        ys, xs = np.nonzero(self.off_lesion(6))
        if len(xs) == 0:
            return self.size[0] * 0.1, self.size[1] * 0.1
        i = int(self.rng.integers(len(xs)))
        return float(xs[i]), float(ys[i])

    def point_at(self, near: float, far: float) -> tuple[float, float]:
        """A random point off the lesion between `near` and `far` % of the side from it."""
        ring = grow(self.lesion, max(1, round(far * self.unit))) & self.off_lesion(near)
        ys, xs = np.nonzero(ring)
        if len(xs) == 0:
            return self.free_point()
        i = int(self.rng.integers(len(xs)))
        return float(xs[i]), float(ys[i])

    def far_side(self) -> str:
        """The image edge farthest from the lesion: top, bottom, left or right."""
        ys, xs = np.nonzero(self.lesion)
        if len(xs) == 0:
            return "bottom"
        h, w = self.lesion.shape
        room = {"top": ys.min() / h, "bottom": 1 - ys.max() / h, "left": xs.min() / w}
        room["right"] = 1 - xs.max() / w
        return max(room, key=room.get)


Artefact = Callable[[Canvas], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Family:
    """An artefact drawn from a family of looks: the canvas's look, or one sampled from the
    family when it has none (before anything is drawn, so a seed draws the same); a look that
    says `classic` gets the one drawing of before the families (the twins were trained on it)."""

    sample: Callable[[np.random.Generator, float], dict]
    draw: Callable[[Canvas, dict], tuple[np.ndarray, np.ndarray]]
    classic: Artefact

    def __call__(self, canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
        look = canvas.look = canvas.look or self.sample(canvas.rng, canvas.strength)
        if look.get("classic"):
            return self.classic(canvas)
        return self.draw(canvas, look)


def pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    """One of a look's options, uniformly."""
    return str(options[int(rng.integers(len(options)))])


def blend(
    canvas: Canvas, overlay: Image.Image, multiply: bool = False, keep_off: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Lay an RGBA overlay on the picture (multiplied, as ink stains skin, or over it); the
    changed pixels are the mask. `keep_off`: nothing lands on the lesion."""
    rgba = np.asarray(overlay, dtype=np.float64)
    alpha = rgba[..., 3:] / 255.0
    if keep_off:
        alpha = alpha * canvas.off_lesion(1)[..., None]
    picture = canvas.picture.astype(np.float64)
    colour = picture * rgba[..., :3] / 255.0 if multiply else rgba[..., :3]
    out = picture * (1 - alpha) + colour * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8), alpha[..., 0] > 0.1


def soften(overlay: Image.Image, radius: int) -> Image.Image:
    """Soften an overlay's alpha (a marker's and a bubble's edges are not sharp)."""
    rgba = np.asarray(overlay).copy()
    rgba[..., 3] = np.clip(box_blur(rgba[..., 3].astype(np.float64), radius), 0, 255)
    return Image.fromarray(rgba.astype(np.uint8), "RGBA")
