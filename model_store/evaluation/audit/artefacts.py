"""The artefacts of dermoscopy that models have learnt as shortcuts, drawn procedurally (no
third-party templates), seeded, off the lesion, each with a strength in 0–1:

- `ink`: skin-marker ink from a family of looks sampled per image — violet, blue, black,
  red or green; a circle around the lesion, dots, an arrow, letters or a stroke; its width,
  opacity and distance from the lesion (Winkler et al. 2019: +~40 % false positives on nevi
  with gentian violet);
- `ruler`: a translucent ruler with millimetre ticks and numbers along the edge farthest
  from the lesion (Winkler et al. 2021);
- `dark-corners`: a dermoscope's circular vignette at one of several radii (Pewton et al.);
- `hair`: dark curved hairs across the skin;
- `colour-patch`: a colour-calibration chart in a corner (Nauta et al. 2022);
- `bubbles`: immersion-gel bubbles, bright rims and highlights (Katsch et al. 2022);

Each also says the look it drew (`Canvas.look`: ink's sampled family, the ruler's side, the
vignette's radius, how many hairs or bubbles, the chart's corner), so the report can say
which looks moved a model; and two controls: `identity` (nothing drawn: the image only
decoded and re-encoded, its shift is the noise floor) and `lesion-removed` (the lesion filled
in from the skin around it: a model whose answer barely moves is not looking at the lesion).
Each returns the altered picture and the mask of the pixels it changed (for the share of
attention on them).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model_store.evaluation.audit.canvas import Artefact, Canvas, blend, soften
from model_store.evaluation.audit.ink import ink
from model_store.evaluation.audit.lesion import box_blur, grow

HAIR = (38, 26, 20)
CHART = [  # a colour checker's first two rows (sRGB)
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177),
    (103, 189, 170), (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108),
    (157, 188, 64), (224, 163, 46),
]  # fmt: skip
RADII = (0.95, 0.85, 0.75)  # dark corners: the vignette's radius, × half the diagonal


def ruler(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
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


def dark_corners(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    w, h = canvas.size
    half_diagonal = np.hypot(w, h) / 2
    fraction = RADII[int(canvas.rng.integers(len(RADII)))]
    canvas.look = {"radius": f"{fraction:.2f} of the half-diagonal"}
    fraction = 1 - (1 - fraction) * canvas.strength
    ys, xs = np.nonzero(canvas.lesion)
    needed = np.hypot(xs - w / 2, ys - h / 2).max() + 3 * canvas.unit if len(xs) else 0
    radius = max(fraction * half_diagonal, needed)  # the lesion stays in view
    yy, xx = np.mgrid[0:h, 0:w]
    distance = np.hypot(xx + 0.5 - w / 2, yy + 0.5 - h / 2)
    edge = 3 * canvas.unit
    alpha = np.clip((distance - radius) / edge + 0.5, 0, 1)
    noise = canvas.rng.normal(0, 3, (h, w, 1))
    dark = np.clip(np.array([14.0, 12.0, 12.0]) + noise, 0, 255)
    out = canvas.picture * (1 - alpha[..., None]) + dark * alpha[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8), alpha > 0.1


def hair(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
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


def colour_patch(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    w, h = canvas.size
    u = canvas.unit
    cell = max(3, round((2.5 + 2 * canvas.strength) * u))
    cols, rows = 4, 3
    width, height = cols * cell, rows * cell
    corners = [
        (round(2 * u), round(2 * u)),
        (round(w - 2 * u - width), round(2 * u)),
        (round(2 * u), round(h - 2 * u - height)),
        (round(w - 2 * u - width), round(h - 2 * u - height)),
    ]
    # The corner where the chart covers the least of the lesion (none, mostly).
    x0, y0 = min(
        corners, key=lambda c: canvas.lesion[c[1] : c[1] + height, c[0] : c[0] + width].sum()
    )
    names = ("top-left", "top-right", "bottom-left", "bottom-right")
    canvas.look = {"corner": names[corners.index((x0, y0))]}
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
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


def bubbles(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    w, h = canvas.size
    rng, u = canvas.rng, canvas.unit
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    count = int(3 + 5 * canvas.strength * rng.uniform(0.5, 1))
    canvas.look = {"bubbles": "3-5" if count < 6 else "6-8"}
    for _ in range(count):
        x, y = canvas.free_point()
        r = u * rng.uniform(2, 6)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, 28))  # the gel's sheen
        draw.ellipse(
            (x - r, y - r, x + r, y + r), outline=(70, 70, 75, 150), width=max(1, round(0.3 * u))
        )
        inner = r * 0.82
        draw.arc(
            (x - inner, y - inner, x + inner, y + inner),
            200,
            340,
            fill=(255, 255, 255, 200),
            width=max(1, round(0.4 * u)),
        )
        s = max(1.0, r * 0.16)
        draw.ellipse(
            (x - r * 0.45 - s, y - r * 0.45 - s, x - r * 0.45 + s, y - r * 0.45 + s),
            fill=(255, 255, 255, 230),
        )
    return blend(canvas, soften(overlay, 1))


def identity(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    return canvas.picture.copy(), np.zeros(canvas.lesion.shape, dtype=bool)


def lesion_removed(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The lesion (grown a little) filled from the skin around it: a smooth fill solved at a
    coarse scale (each pixel the mean of its neighbours), then the skin's own fine texture."""
    region = grow(canvas.lesion, max(1, round(2 * canvas.unit)))
    if not region.any():
        return identity(canvas)
    picture = canvas.picture.astype(np.float64)
    fill = _harmonic(picture, region)
    texture = picture - np.stack([box_blur(picture[..., c], 2) for c in range(3)], axis=-1)
    shift = (int(canvas.rng.integers(-40, 41) * canvas.unit / 2), int(canvas.unit * 30))
    borrowed = np.roll(np.where(region[..., None], 0.0, texture), shift, axis=(0, 1))
    out = np.where(region[..., None], fill + borrowed, picture)
    return np.clip(np.round(out), 0, 255).astype(np.uint8), region


def _harmonic(picture: np.ndarray, region: np.ndarray, iterations: int = 400) -> np.ndarray:
    """The region's pixels as the average of their neighbours (Laplace), at quarter scale."""
    step = max(1, min(picture.shape[:2]) // 64)
    small = picture[::step, ::step].copy()
    hole = region[::step, ::step]
    small[hole] = picture[~region].mean(axis=0)
    for _ in range(iterations):
        padded = np.pad(small, ((1, 1), (1, 1), (0, 0)), mode="edge")
        mean = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4
        small[hole] = mean[hole]
    big = np.stack(
        [
            np.asarray(Image.fromarray(small[..., c].astype(np.float32), "F").resize(
                (picture.shape[1], picture.shape[0]), Image.Resampling.BILINEAR))
            for c in range(3)
        ],
        axis=-1,
    )  # fmt: skip
    return big


ARTEFACTS: dict[str, Artefact] = {
    "ink": ink,
    "ruler": ruler,
    "dark-corners": dark_corners,
    "hair": hair,
    "colour-patch": colour_patch,
    "bubbles": bubbles,
}
CONTROLS: dict[str, Artefact] = {"identity": identity, "lesion-removed": lesion_removed}


def draw(
    name: str,
    picture: np.ndarray,
    lesion: np.ndarray,
    seed: int,
    strength: float = 1.0,
    look: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(altered picture, mask of what was drawn): the same seed always draws the same."""
    return draw_with_look(name, picture, lesion, seed, strength, look)[:2]


def draw_with_look(
    name: str,
    picture: np.ndarray,
    lesion: np.ndarray,
    seed: int,
    strength: float = 1.0,
    look: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """`draw`, and the look it drew (ink: sampled from its family unless `look` is given)."""
    known = {**ARTEFACTS, **CONTROLS}
    if name not in known:
        raise ValueError(f"unknown artefact {name!r}; use: {', '.join(known)}")
    canvas = Canvas(picture, lesion, np.random.default_rng(seed), strength, dict(look or {}))
    changed, drawn = known[name](canvas)
    return changed, drawn, canvas.look
