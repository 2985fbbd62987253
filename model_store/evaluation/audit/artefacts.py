"""The artefacts of dermoscopy that models have learnt as shortcuts, drawn procedurally (no
third-party templates), seeded, off the lesion, each with a strength in 0–1:

- `ink`: gentian-violet skin-marker ink — a circle drawn around the lesion, dots, a stroke
  (Winkler et al. 2019: +~40 % false positives on nevi);
- `ruler`: a translucent ruler with millimetre ticks and numbers along the edge farthest
  from the lesion (Winkler et al. 2021);
- `dark-corners`: a dermoscope's circular vignette at one of several radii (Pewton et al.);
- `hair`: dark curved hairs across the skin;
- `colour-patch`: a colour-calibration chart in a corner (Nauta et al. 2022);
- `bubbles`: immersion-gel bubbles, bright rims and highlights (Katsch et al. 2022);

and two controls: `identity` (nothing drawn: the image only decoded and re-encoded, its
shift is the noise floor) and `lesion-removed` (the lesion filled in from the skin around it:
a model whose answer barely moves is not looking at the lesion). Each returns the altered
picture and the mask of the pixels it changed (for the share of attention on them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model_store.evaluation.audit.lesion import box_blur, grow

INK = (88, 40, 135)  # gentian violet, as marker ink dries on skin
HAIR = (38, 26, 20)
CHART = [  # a colour checker's first two rows (sRGB)
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177),
    (103, 189, 170), (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108),
    (157, 188, 64), (224, 163, 46),
]  # fmt: skip
RADII = (0.95, 0.85, 0.75)  # dark corners: the vignette's radius, × half the diagonal


@dataclass
class Canvas:
    picture: np.ndarray  # [h, w, 3] uint8
    lesion: np.ndarray  # [h, w] bool
    rng: np.random.Generator
    strength: float = 1.0

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


def _blend(canvas: Canvas, overlay: Image.Image, multiply: bool = False, keep_off: bool = True):  # noqa: ANN202
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


def _soft(overlay: Image.Image, radius: int) -> Image.Image:
    """Soften an overlay's alpha (a marker's and a bubble's edges are not sharp)."""
    rgba = np.asarray(overlay).copy()
    rgba[..., 3] = np.clip(box_blur(rgba[..., 3].astype(np.float64), radius), 0, 255)
    return Image.fromarray(rgba.astype(np.uint8), "RGBA")


def ink(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
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
    return _blend(canvas, _soft(overlay, max(1, round(0.3 * u))), multiply=True)


def ruler(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    w, h = canvas.size
    u = canvas.unit
    side = canvas.far_side()
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
    return _blend(canvas, overlay)


def dark_corners(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    w, h = canvas.size
    half_diagonal = np.hypot(w, h) / 2
    fraction = RADII[int(canvas.rng.integers(len(RADII)))]
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
    for _ in range(int(6 + 8 * canvas.strength * rng.uniform(0.5, 1))):
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
    return _blend(canvas, overlay)


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
    return _blend(canvas, overlay, keep_off=False)


def bubbles(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    w, h = canvas.size
    rng, u = canvas.rng, canvas.unit
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(int(3 + 5 * canvas.strength * rng.uniform(0.5, 1))):
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
    return _blend(canvas, _soft(overlay, 1))


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
    name: str, picture: np.ndarray, lesion: np.ndarray, seed: int, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(altered picture, mask of what was drawn): the same seed always draws the same."""
    known = {**ARTEFACTS, **CONTROLS}
    if name not in known:
        raise ValueError(f"unknown artefact {name!r}; use: {', '.join(known)}")
    return known[name](Canvas(picture, lesion, np.random.default_rng(seed), strength))
