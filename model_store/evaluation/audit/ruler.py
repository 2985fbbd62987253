"""Rulers and scale bars, drawn from a family of looks sampled per image: what it is (clear,
white, yellow or black plastic with millimetre ticks, or a printed scale bar), where it lies
(the whole edge farthest from the lesion, part of it, or turned at an angle by it), with or
without numbers, and how wide. Winkler et al. 2021 found four of six bar types cut a
classifier's specificity from 87.9 % to 0–43.9 %: the type matters, so the audit draws many."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model_store.evaluation.audit.canvas import Canvas, Family, blend, pick

# plastic (RGBA) and its ticks
RULER_KINDS = {
    "clear": ((236, 232, 214, 205), (20, 20, 20, 255)),
    "white": ((248, 248, 244, 245), (20, 20, 20, 255)),
    "yellow": ((232, 196, 62, 240), (25, 22, 18, 255)),
    "black": ((32, 32, 34, 235), (235, 235, 235, 255)),
    "scale-bar": (None, (15, 15, 15, 255)),  # a printed bar: no plastic, a line and a label
}
RULER_PLACES = ("edge", "part of the edge", "angled")


def ruler_look(rng: np.random.Generator, strength: float) -> dict:
    return {
        "kind": pick(rng, list(RULER_KINDS)),
        "place": pick(rng, RULER_PLACES),
        "numbers": pick(rng, ("numbers", "ticks only")),
        "width": round(float(rng.uniform(5.0, 11.0) * (0.6 + 0.4 * strength)), 2),  # % of side
    }


def _family_ruler(canvas: Canvas, look: dict) -> tuple[np.ndarray, np.ndarray]:
    """A ruler of the look, kept off the lesion."""
    w, h = canvas.size
    u, rng = canvas.unit, canvas.rng
    side = look["side"] = canvas.far_side()
    thick = max(8, round(look["width"] * u))
    span = w if side in ("top", "bottom") else h
    length = span if look["place"] == "edge" else round(span * rng.uniform(0.35, 0.7))
    strip = _strip(length, thick, u, look)
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    if look["kind"] == "scale-bar":  # printed level, by the far edge, whatever the place
        look["place"] = "level"
        x = {"left": round(2 * u), "right": w - strip.width - round(2 * u)}.get(
            side, round(rng.uniform(0, w - strip.width))
        )
        y = {"top": round(2 * u), "bottom": h - thick - round(2 * u)}.get(
            side, round(rng.uniform(0, h - thick))
        )
        overlay.paste(strip, (x, y), strip)
    elif look["place"] == "angled":  # by the far edge, turned 15-40 degrees from it
        angle = float(rng.uniform(15, 40) * rng.choice([-1, 1]))
        turned = strip.rotate(angle + (90 if side in ("left", "right") else 0), expand=True)
        x, y = _far_corner(canvas, side, turned.size)
        overlay.paste(turned, (x, y), turned)  # paste: it may hang over the image's edge
    else:
        start = round(rng.uniform(0, span - length)) if length < span else 0
        if side in ("left", "right"):
            strip = strip.rotate(90, expand=True)
            x = 0 if side == "left" else w - thick
            overlay.paste(strip, (x, start), strip)
        else:
            y = 0 if side == "top" else h - thick
            overlay.paste(strip, (start, y), strip)
    return blend(canvas, overlay)


def _strip(length: int, thick: int, u: float, look: dict) -> Image.Image:
    """The ruler drawn lying flat: ticks along its top edge, numbers under the long ones."""
    plastic, tick = RULER_KINDS[look["kind"]]
    strip = Image.new("RGBA", (length, thick), (0, 0, 0, 0))
    draw = ImageDraw.Draw(strip)
    step = max(3.0, 1.6 * u)  # a millimetre
    font = ImageFont.load_default(size=max(8, round(thick * 0.38)))
    if plastic is None:  # a scale bar: one thick line of a few millimetres, end ticks, a label
        bar = min(length - 2, round(step * 10))
        y = thick // 2
        draw.line((1, y, bar, y), fill=tick, width=max(2, round(0.8 * u)))
        for x in (1, bar):
            draw.line((x, y - thick * 0.25, x, y + thick * 0.25), fill=tick, width=1)
        if look["numbers"] == "numbers":
            draw.text((bar + 3, y), "1 mm" if bar < 6 * step else "10 mm", fill=tick, font=font,
                      anchor="lm")  # fmt: skip
        return strip
    draw.rectangle((0, 0, length, thick), fill=plastic)
    for i, pos in enumerate(np.arange(step, length - step, step)):
        size = thick * (0.65 if i % 10 == 0 else 0.45 if i % 5 == 0 else 0.28)
        draw.line((pos, 0, pos, size), fill=tick, width=1)
        if look["numbers"] == "numbers" and i % 10 == 0 and i:
            draw.text((pos + 1, size), str(i // 10), fill=tick, font=font)
    return strip


def _far_corner(canvas: Canvas, side: str, size: tuple[int, int]) -> tuple[int, int]:
    """Where a turned ruler of `size` sits: centred on the far side, pushed to its edge."""
    w, h = canvas.size
    sw, sh = size
    x = {"left": -sw // 4, "right": w - 3 * sw // 4}.get(side, (w - sw) // 2)
    y = {"top": -sh // 4, "bottom": h - 3 * sh // 4}.get(side, (h - sh) // 2)
    return int(x), int(y)


def _classic_ruler(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The audit's one ruler before the family: clear plastic along the whole far edge, with
    numbers (the planted-shortcut twins' training images carry it)."""
    w, h = canvas.size
    u = canvas.unit
    side = canvas.far_side()
    canvas.look = {"side": side}
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    thick = max(8, round((6 + 4 * canvas.strength) * u))
    along = w if side in ("top", "bottom") else h
    box = {
        "top": (0, 0, w, thick), "bottom": (0, h - thick, w, h),
        "left": (0, 0, thick, h), "right": (w - thick, 0, w, h),
    }[side]  # fmt: skip
    draw.rectangle(box, fill=(236, 232, 214, 205))  # translucent plastic
    step = max(3.0, 1.6 * u)  # a millimetre
    font = ImageFont.load_default(size=max(8, round(thick * 0.38)))
    for i, pos in enumerate(np.arange(step, along - step, step)):
        length = thick * (0.65 if i % 10 == 0 else 0.45 if i % 5 == 0 else 0.28)
        ink_ = (20, 20, 20, 255)
        if side in ("top", "bottom"):
            y0 = box[1] if side == "top" else box[3] - length
            draw.line((pos, y0, pos, y0 + length), fill=ink_, width=1)
            if i % 10 == 0 and i:
                ty = box[1] + length if side == "top" else box[3] - length - thick * 0.4
                draw.text((pos + 1, ty), str(i // 10), fill=ink_, font=font)
        else:
            x0 = box[0] if side == "left" else box[2] - length
            draw.line((x0, pos, x0 + length, pos), fill=ink_, width=1)
            if i % 10 == 0 and i:
                tx = box[0] + length if side == "left" else box[2] - length - thick * 0.45
                draw.text((tx, pos + 1), str(i // 10), fill=ink_, font=font)
    return blend(canvas, overlay)


ruler = Family(ruler_look, _family_ruler, _classic_ruler)
