"""Immersion-gel bubbles, drawn from a family of looks sampled per image: how many, how large,
whether they gather in one cluster (as a drop of gel does) or scatter, and whether their rims
show dark or bright. Katsch et al. 2022 saw AUPRC fall by 0.03-0.045 with bubbles."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_store.evaluation.audit.canvas import Canvas, Family, blend, pick, soften

BUBBLE_COUNTS = {"few": (2, 4), "some": (5, 9), "many": (10, 18)}
BUBBLE_SIZES = {"small": (1.0, 3.0), "large": (3.0, 8.0)}  # radius, % of the side
BUBBLE_RIMS = {"dark": (70, 70, 75, 150), "bright": (250, 250, 250, 170)}


def bubbles_look(rng: np.random.Generator, strength: float) -> dict:
    return {
        "count": pick(rng, list(BUBBLE_COUNTS)),
        "size": pick(rng, list(BUBBLE_SIZES)),
        "spread": pick(rng, ("scattered", "clustered")),
        "rim": pick(rng, list(BUBBLE_RIMS)),
    }


def _family_bubbles(canvas: Canvas, look: dict) -> tuple[np.ndarray, np.ndarray]:
    """Bubbles of the look, off the lesion."""
    rng, u = canvas.rng, canvas.unit
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    low, high = BUBBLE_COUNTS[look["count"]]
    count = max(1, round(rng.integers(low, high + 1) * canvas.strength))
    cx, cy = canvas.free_point()
    for _ in range(count):
        if look["spread"] == "clustered":  # around one point, a few bubbles wide
            x, y = cx + rng.normal(0, 6 * u), cy + rng.normal(0, 6 * u)
        else:
            x, y = canvas.free_point()
        _bubble(draw, x, y, u * rng.uniform(*BUBBLE_SIZES[look["size"]]), u,
                BUBBLE_RIMS[look["rim"]])  # fmt: skip
    return blend(canvas, soften(overlay, 1))


def _bubble(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, u: float, rim: tuple) -> None:
    """One bubble: the gel's sheen, its rim, a bright inner arc and a highlight."""
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, 28))
    draw.ellipse((x - r, y - r, x + r, y + r), outline=rim, width=max(1, round(0.3 * u)))
    inner = r * 0.82
    draw.arc((x - inner, y - inner, x + inner, y + inner), 200, 340,
             fill=(255, 255, 255, 200), width=max(1, round(0.4 * u)))  # fmt: skip
    s = max(1.0, r * 0.16)
    draw.ellipse(
        (x - r * 0.45 - s, y - r * 0.45 - s, x - r * 0.45 + s, y - r * 0.45 + s),
        fill=(255, 255, 255, 230),
    )


def _classic_bubbles(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The audit's one kind of bubbles before the family: 3-8, scattered, dark rims (the
    planted-shortcut twins' training images carry them)."""
    rng, u = canvas.rng, canvas.unit
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    count = int(3 + 5 * canvas.strength * rng.uniform(0.5, 1))
    canvas.look = {"bubbles": "3-5" if count < 6 else "6-8"}
    for _ in range(count):
        x, y = canvas.free_point()
        _bubble(draw, x, y, u * rng.uniform(2, 6), u, BUBBLE_RIMS["dark"])
    return blend(canvas, soften(overlay, 1))


bubbles = Family(bubbles_look, _family_bubbles, _classic_bubbles)
