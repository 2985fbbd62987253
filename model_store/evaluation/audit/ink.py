"""Skin-marker ink, drawn from a family of looks sampled per image: the colour of the pen,
the mark (a ring around the lesion, dots, an arrow, letters, a stroke), its width, opacity and
distance from the lesion. An audit with one drawing tests the model against that drawing;
ink in real photographs varies in all of these (a planted shortcut to a blue pen passed an
audit whose ink was always a violet ring)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model_store.evaluation.audit.canvas import Canvas, Family, blend, soften

INK = (88, 40, 135)  # gentian violet, as marker ink dries on skin
# Skin-marker ink as it appears in real photographs (Winkler et al. 2019 drew with a
# gentian-violet marker; archives hold blue, black, red and green pens as well): a look per
# image, sampled from these, so that an audit is not a test of one drawing.
INK_COLOURS = {
    "violet": INK,
    "blue": (32, 68, 172),
    "black": (38, 36, 40),
    "red": (172, 34, 44),
    "green": (28, 116, 62),
}
INK_MARKS = ("circle", "dots", "arrow", "letters", "stroke")
INK_DISTANCES = {"near": (2.0, 8.0), "far": (12.0, 30.0)}  # from the lesion, % of the side
# The look the planted-ink twins were trained on (model_store/demos/shortcuts.py).
CLASSIC_INK = {"colour": "violet", "mark": "circle", "width": 1.6, "opacity": 0.95,
               "distance": "near", "classic": True}  # fmt: skip


def ink_look(rng: np.random.Generator, strength: float) -> dict:
    """One look of the family, sampled."""
    return {
        "colour": str(rng.choice(list(INK_COLOURS))),
        "mark": str(rng.choice(INK_MARKS)),
        "width": round(float(rng.uniform(0.6, 2.2)), 2),  # % of the shorter side
        "opacity": round(float(rng.uniform(0.45, 0.95)) * (0.5 + 0.5 * strength), 2),
        "distance": str(rng.choice(list(INK_DISTANCES))),
    }


def _family_ink(canvas: Canvas, look: dict) -> tuple[np.ndarray, np.ndarray]:
    """Marker ink of the look, multiplied into the skin as ink stains it, off the lesion."""
    rng = canvas.rng
    w, h = canvas.size
    u = canvas.unit
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    colour = (*INK_COLOURS[look["colour"]], int(255 * min(1.0, look["opacity"])))
    width = max(1, round(look["width"] * u))
    near, far = INK_DISTANCES[look["distance"]]
    cx, cy, rx, ry = _lesion_box(canvas)
    if look["mark"] == "circle":  # the dermatologist's ring around the lesion
        gap = rng.uniform(near, far) * u
        angles = np.linspace(0, 2 * np.pi, 48)
        wobble = 1 + 0.04 * rng.standard_normal(48)
        points = [
            (cx + (rx + gap) * k * np.cos(a), cy + (ry + gap) * k * np.sin(a))
            for a, k in zip(angles, wobble, strict=True)
        ]
        draw.line([*points, points[0]], fill=colour, width=width, joint="curve")
    elif look["mark"] == "dots":
        for _ in range(int(rng.integers(2, 7))):
            x, y = canvas.point_at(near, far)
            r = max(1.0, width * rng.uniform(0.6, 1.2))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    elif look["mark"] == "arrow":  # pointing at the lesion, its tip at the distance
        x, y = canvas.point_at(near, far)
        direction = np.array([cx - x, cy - y]) / max(1e-6, np.hypot(cx - x, cy - y))
        tail = np.array([x, y]) - direction * rng.uniform(12, 22) * u
        draw.line((*tail, x, y), fill=colour, width=width)
        for turn in (2.6, -2.6):
            c, s_ = np.cos(turn), np.sin(turn)
            wing = np.array(
                [c * direction[0] - s_ * direction[1], s_ * direction[0] + c * direction[1]]
            )
            draw.line((x, y, *(np.array([x, y]) + wing * 4 * u)), fill=colour, width=width)
    elif look["mark"] == "letters":  # a site label or an initial
        x, y = canvas.point_at(near, far)
        text = str(rng.choice(["L", "R", "A", "B", "1", "2", "x", "OK"]))
        font = ImageFont.load_default(size=max(8, round((5 + 3 * look["width"]) * u)))
        draw.text((x, y), text, fill=colour, font=font, anchor="mm")
    else:  # a stroke
        x, y = canvas.point_at(near, far)
        heading = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(8, 25) * u
        draw.line((x, y, x + length * np.cos(heading), y + length * np.sin(heading)),
                  fill=colour, width=width)  # fmt: skip
    return blend(canvas, soften(overlay, max(1, round(0.3 * u))), multiply=True)


def _lesion_box(canvas: Canvas) -> tuple[float, float, float, float]:
    """The lesion's centre and half extents (the image's centre when none was found)."""
    ys, xs = np.nonzero(canvas.lesion)
    if not len(xs):
        w, h = canvas.size
        return w / 2, h / 2, w / 8, h / 8
    return xs.mean(), ys.mean(), (xs.max() - xs.min()) / 2, (ys.max() - ys.min()) / 2


def _classic_ink(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The audit's one ink look before the family: a violet circle, dots, sometimes a
    stroke (the planted-ink twins were trained on it)."""
    w, h = canvas.size
    u, rng = canvas.unit, canvas.rng
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    alpha = int(255 * min(1.0, 0.55 + 0.4 * canvas.strength))
    colour = (*INK, alpha)
    ys, xs = np.nonzero(canvas.lesion)
    if len(xs):  # the dermatologist's circle around the lesion, a little irregular
        cx, cy = xs.mean(), ys.mean()
        rx, ry = (xs.max() - xs.min()) / 2 + 6 * u, (ys.max() - ys.min()) / 2 + 6 * u
        angles = np.linspace(0, 2 * np.pi, 48)
        wobble = 1 + 0.04 * rng.standard_normal(48)
        points = [
            (cx + rx * k * np.cos(a), cy + ry * k * np.sin(a))
            for a, k in zip(angles, wobble, strict=True)
        ]
        draw.line([*points, points[0]], fill=colour, width=max(2, round(1.6 * u)), joint="curve")
    for _ in range(int(rng.integers(2, 6))):  # dots
        x, y = canvas.free_point()
        r = u * rng.uniform(0.8, 1.8)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    if rng.random() < 0.5:  # a short stroke
        (x0, y0), (x1, y1) = canvas.free_point(), canvas.free_point()
        x1, y1 = x0 + (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.3
        draw.line((x0, y0, x1, y1), fill=colour, width=max(2, round(1.2 * u)))
    return blend(canvas, soften(overlay, max(1, round(0.3 * u))), multiply=True)


ink = Family(ink_look, _family_ink, _classic_ink)
