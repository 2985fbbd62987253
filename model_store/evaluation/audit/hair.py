"""Hair, drawn from a family of looks sampled per image: how many hairs, their colour (dark
brown, black, blond or grey), thickness, length and shape (gently curved, straight, or curly).
Hair is the commonest occluder in dermoscopy; a model that learnt dark hair as benign
would not be caught by an audit that drew only dark hair."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_store.evaluation.audit.canvas import Canvas, Family, blend, pick

HAIR = (38, 26, 20)
HAIR_COLOURS = {"dark": HAIR, "black": (16, 14, 14), "blond": (178, 146, 96),
                "grey": (150, 146, 142)}  # fmt: skip
HAIR_COUNTS = {"few": (3, 6), "some": (6, 12), "many": (12, 24)}
HAIR_LENGTHS = {"short": (8.0, 20.0), "long": (20.0, 45.0)}  # % of the side
HAIR_THICKNESS = {"fine": (0.25, 0.45), "coarse": (0.5, 0.9)}  # % of the side
HAIR_SHAPES = ("curved", "straight", "curly")


def hair_look(rng: np.random.Generator, strength: float) -> dict:
    return {
        "count": pick(rng, list(HAIR_COUNTS)),
        "colour": pick(rng, list(HAIR_COLOURS)),
        "thickness": pick(rng, list(HAIR_THICKNESS)),
        "length": pick(rng, list(HAIR_LENGTHS)),
        "shape": pick(rng, HAIR_SHAPES),
    }


def _family_hair(canvas: Canvas, look: dict) -> tuple[np.ndarray, np.ndarray]:
    """Hairs of the look, off the lesion."""
    w, h = canvas.size
    rng, u = canvas.rng, canvas.unit
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    low, high = HAIR_COUNTS[look["count"]]
    count = max(1, round(rng.integers(low, high + 1) * canvas.strength))
    base = HAIR_COLOURS[look["colour"]]
    for _ in range(count):
        start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(*HAIR_LENGTHS[look["length"]]) * u
        t = np.linspace(0, 1, 32)[:, None]
        direction = np.array([np.cos(heading), np.sin(heading)])
        across = np.array([-direction[1], direction[0]])
        line = start + t * length * direction
        if look["shape"] == "curved":
            line = line + across * (4 * t * (1 - t)) * rng.normal(0, 6 * u)
        elif look["shape"] == "curly":
            turns = rng.uniform(2, 4)
            line = line + across * np.sin(2 * np.pi * turns * t) * rng.uniform(1.5, 3.5) * u
        shade = int(rng.integers(-12, 13))
        colour = tuple(int(np.clip(c + shade, 0, 255)) for c in base) + (230,)
        width = max(1, round(rng.uniform(*HAIR_THICKNESS[look["thickness"]]) * u))
        draw.line([tuple(p) for p in line], fill=colour, width=width, joint="curve")
    return blend(canvas, overlay)


def _classic_hair(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The audit's one kind of hair before the family: dark, gently curved, 6-14 of them (the
    planted-shortcut twins' training images carry it)."""
    w, h = canvas.size
    rng, u = canvas.rng, canvas.unit
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    count = int(6 + 8 * canvas.strength * rng.uniform(0.5, 1))
    canvas.look = {"hairs": "6-9" if count < 10 else "10-14"}
    for _ in range(count):
        start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(20, 45) * u
        end = start + length * np.array([np.cos(heading), np.sin(heading)])
        bend = (start + end) / 2 + rng.normal(0, 6 * u, 2)
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        shade = int(rng.integers(0, 25))
        colour = (HAIR[0] + shade, HAIR[1] + shade, HAIR[2] + shade, 235)
        draw.line(
            [tuple(p) for p in curve], fill=colour, width=max(1, round(rng.uniform(0.35, 0.8) * u))
        )
    return blend(canvas, overlay)


hair = Family(hair_look, _family_hair, _classic_hair)
