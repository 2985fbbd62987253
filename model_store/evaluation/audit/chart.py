"""Colour-calibration patches, drawn from a family of looks sampled per image: what they are
(a colour checker's cells, a grey-scale strip, or the round coloured stickers some clinics
put beside a lesion), how large, and the corner that covers least of the lesion. Nauta et al.
2022 found a classifier that had learnt such patches as benign."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model_store.evaluation.audit.canvas import Canvas, Family, blend, pick

CHART = [  # a colour checker's first two rows (sRGB)
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177),
    (103, 189, 170), (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108),
    (157, 188, 64), (224, 163, 46),
]  # fmt: skip
GREYS = [(243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85),
         (52, 52, 52)]  # fmt: skip
CHART_KINDS = ("checker", "grey-scale", "stickers")
CHART_SIZES = {"small": 2.5, "large": 4.5}  # a cell, % of the side
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def chart_look(rng: np.random.Generator, strength: float) -> dict:
    return {"kind": pick(rng, CHART_KINDS), "size": pick(rng, list(CHART_SIZES))}


def _family_colour_patch(canvas: Canvas, look: dict) -> tuple[np.ndarray, np.ndarray]:
    """The patch of the look in the corner it covers the least of the lesion in; a chart may
    lie over the lesion's edge, as a real one may."""
    u, rng = canvas.unit, canvas.rng
    cell = max(3, round(CHART_SIZES[look["size"]] * (0.6 + 0.4 * canvas.strength) * u))
    cell *= 2 if look["kind"] == "stickers" else 1  # a sticker is a chart's one cell, larger
    cols, rows = {"checker": (4, 3), "grey-scale": (6, 1), "stickers": (3, 1)}[look["kind"]]
    x0, y0 = _corner(canvas, cols * cell, rows * cell, look)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    if look["kind"] == "stickers":  # round stickers, a little apart, in chart colours
        for c in range(cols):
            colour = (*CHART[int(rng.integers(len(CHART)))], 255)
            x = x0 + c * cell
            draw.ellipse((x + 1, y0 + 1, x + cell - 2, y0 + cell - 2), fill=colour,
                         outline=(250, 250, 250, 255), width=max(1, cell // 10))  # fmt: skip
        return blend(canvas, overlay, keep_off=False)
    colours = CHART if look["kind"] == "checker" else GREYS
    draw.rectangle((x0 - 2, y0 - 2, x0 + cols * cell + 1, y0 + rows * cell + 1),
                   fill=(25, 25, 25, 255))  # fmt: skip
    for r in range(rows):
        for c in range(cols):
            box = (x0 + c * cell + 1, y0 + r * cell + 1, x0 + (c + 1) * cell - 1,
                   y0 + (r + 1) * cell - 1)  # fmt: skip
            draw.rectangle(box, fill=(*colours[(r * cols + c) % len(colours)], 255))
    return blend(canvas, overlay, keep_off=False)


def _corner(canvas: Canvas, width: int, height: int, look: dict) -> tuple[int, int]:
    """The corner where a patch of this size covers the least of the lesion; said in `look`."""
    w, h = canvas.size
    u = canvas.unit
    corners = [
        (round(2 * u), round(2 * u)),
        (round(w - 2 * u - width), round(2 * u)),
        (round(2 * u), round(h - 2 * u - height)),
        (round(w - 2 * u - width), round(h - 2 * u - height)),
    ]
    x0, y0 = min(
        corners, key=lambda c: canvas.lesion[c[1] : c[1] + height, c[0] : c[0] + width].sum()
    )
    look["corner"] = CORNERS[corners.index((x0, y0))]
    return x0, y0


def _classic_colour_patch(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The audit's one chart before the family: a colour checker's 4 × 3 cells (the
    planted-shortcut twins' training images carry it)."""
    u = canvas.unit
    cell = max(3, round((2.5 + 2 * canvas.strength) * u))
    cols, rows = 4, 3
    width, height = cols * cell, rows * cell
    canvas.look = {}
    x0, y0 = _corner(canvas, width, height, canvas.look)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((x0 - 2, y0 - 2, x0 + width + 1, y0 + height + 1), fill=(25, 25, 25, 255))
    for r in range(rows):
        for c in range(cols):
            colour = (*CHART[(r * cols + c) % len(CHART)], 255)
            box = (
                x0 + c * cell + 1,
                y0 + r * cell + 1,
                x0 + (c + 1) * cell - 1,
                y0 + (r + 1) * cell - 1,
            )
            draw.rectangle(box, fill=colour)
    return blend(canvas, overlay, keep_off=False)


colour_patch = Family(chart_look, _family_colour_patch, _classic_colour_patch)
