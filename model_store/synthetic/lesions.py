"""Synthetic dermoscopy-like images generated in code (nothing can be downloaded here).

Each image: a skin-tone background with low-frequency shading, pores and hair-like strands,
and one lesion at a random place and size whose colour, shape, border and texture depend on
its class. The lesion mask is kept as ground truth for the Grad-CAM pointing game.
Deterministic: image i of seed s is the same whatever else is generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = (
    ("akiec", "Actinic keratosis / intraepithelial carcinoma"),
    ("bcc", "Basal cell carcinoma"),
    ("bkl", "Benign keratosis-like lesion"),
    ("df", "Dermatofibroma"),
    ("mel", "Melanoma"),
    ("nv", "Melanocytic nevus"),
    ("vasc", "Vascular lesion"),
)


@dataclass(frozen=True)
class LesionStyle:
    colour: tuple[float, float, float]  # mean RGB 0–1
    radius: tuple[float, float]  # fraction of the image side
    irregularity: float  # amplitude of the border's harmonics
    border: float  # width of the fuzzy edge, fraction of the radius
    texture: str


STYLES = {
    "akiec": LesionStyle((0.80, 0.42, 0.40), (0.13, 0.24), 0.16, 0.30, "scaly"),
    "bcc": LesionStyle((0.88, 0.70, 0.68), (0.12, 0.22), 0.06, 0.10, "vessels"),
    "bkl": LesionStyle((0.62, 0.45, 0.28), (0.13, 0.25), 0.08, 0.05, "cerebriform"),
    "df": LesionStyle((0.50, 0.34, 0.24), (0.10, 0.17), 0.04, 0.30, "white_centre"),
    "mel": LesionStyle((0.22, 0.14, 0.12), (0.14, 0.27), 0.28, 0.25, "multicolour"),
    "nv": LesionStyle((0.45, 0.29, 0.18), (0.10, 0.20), 0.03, 0.12, "smooth"),
    "vasc": LesionStyle((0.62, 0.12, 0.25), (0.09, 0.18), 0.05, 0.10, "lacunae"),
}

_SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.91, 0.72, 0.60],
        [0.84, 0.63, 0.50],
        [0.72, 0.52, 0.39],
        [0.58, 0.40, 0.29],
        [0.93, 0.76, 0.70],
    ]
)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise: a cells×cells random grid upsampled bilinearly to size×size, in -1..1."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.normal(0, 0.03, 3)
    shade = 0.06 * _smooth_noise(rng, size, 4)[..., None]
    pores = 0.025 * rng.normal(0, 1, (size, size, 1))
    return tone[None, None, :] * (1 + shade) + pores


def _texture(
    rng: np.random.Generator, name: str, size: int, u: np.ndarray, v: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """Per-class RGB modulation inside the lesion (u, v: coordinates relative to its centre
    in radii; d: normalised distance, 1 at the border)."""
    out = np.zeros((size, size, 3), np.float32)
    if name == "scaly":
        flecks = (rng.uniform(0, 1, (size, size)) > 0.93) * 0.35
        out += (0.12 * rng.normal(0, 1, (size, size)) + flecks)[..., None]
    elif name == "vessels":
        for _ in range(rng.integers(3, 6)):
            angle = rng.uniform(0, np.pi)
            freq = rng.uniform(2.0, 4.0)
            line = np.abs(
                np.sin(freq * (u * np.cos(angle) + v * np.sin(angle)) + rng.uniform(0, 6))
            )
            out += (line < 0.08)[..., None] * np.array([0.05, -0.45, -0.40])
        out += 0.12 * np.clip(1 - np.abs(d - 0.85) * 8, 0, 1)[..., None]  # pearly rolled rim
    elif name == "cerebriform":
        ridges = np.sin(9.0 * u + 3 * _smooth_noise(rng, size, 5)) * np.sin(7.0 * v)
        out += 0.12 * ridges[..., None]
    elif name == "white_centre":  # a white scar-like centre in a darker pigment ring
        centre = np.clip(1.2 - d / 0.5, 0, 1)
        out += centre[..., None] * np.array([0.45, 0.55, 0.60])
        out -= np.clip(1 - np.abs(d - 0.75) * 5, 0, 1)[..., None] * np.array([0.15, 0.12, 0.08])
    elif name == "multicolour":
        blotch = _smooth_noise(rng, size, 6)
        out += (blotch > 0.15)[..., None] * np.array([0.05, 0.15, 0.35])  # blue-grey veil
        out += (blotch < -0.3)[..., None] * np.array([0.25, 0.15, 0.05])  # lighter brown
        out += 0.06 * rng.normal(0, 1, (size, size, 1))
    elif name == "smooth":
        out += 0.03 * _smooth_noise(rng, size, 3)[..., None]
    elif name == "lacunae":
        for _ in range(rng.integers(5, 10)):
            cu, cv = rng.uniform(-0.6, 0.6, 2)
            blob = np.hypot(u - cu, v - cv) < rng.uniform(0.12, 0.22)
            out += blob[..., None] * np.array([-0.25, -0.08, 0.02])
    return out


def _hair(rng: np.random.Generator, image: Image.Image) -> None:
    draw = ImageDraw.Draw(image)
    size = image.width
    for _ in range(rng.integers(0, 7)):
        p0, p1, p2 = rng.uniform(-0.1, 1.1, (3, 2)) * size
        t = np.linspace(0, 1, 24)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        shade = int(rng.integers(15, 70))
        draw.line(
            [tuple(p) for p in pts],
            fill=(shade, shade - 8 if shade > 8 else 0, 0),
            width=int(rng.integers(1, 3)),
        )


def lesion_image(seed: int, index: int, size: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 [size, size, 3]) of class `label` and its lesion mask (bool)."""
    rng = np.random.default_rng([seed, index])
    style = STYLES[CLASSES[label][0]]
    radius = rng.uniform(*style.radius) * size
    cx, cy = rng.uniform(radius * 1.1, size - radius * 1.1, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = (xx - cx) / radius, (yy - cy) / radius
    theta = np.arctan2(v, u)
    edge = np.ones_like(theta)
    for k in range(2, 6):
        edge += (
            style.irregularity
            * rng.uniform(0.3, 1.0)
            / (k - 1)
            * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        )
    d = np.hypot(u, v) / edge
    mask = d < 1.0
    alpha = np.clip((1.0 - d) / style.border, 0.0, 1.0)
    alpha = (alpha * alpha * (3 - 2 * alpha))[..., None]
    colour = np.array(style.colour) + rng.normal(0, 0.035, 3)
    lesion = colour[None, None, :] + _texture(rng, style.texture, size, u, v, d)
    rgb = _background(rng, size) * (1 - alpha) + lesion * alpha
    rgb *= rng.uniform(0.9, 1.1)  # exposure
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    _hair(rng, image)
    return np.asarray(image), mask


def dataset(
    seed: int, count: int, size: int, classes: int = len(CLASSES)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` images with balanced labels: (images uint8 [n,s,s,3], labels [n], masks [n,s,s])."""
    labels = np.arange(count) % classes
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), bool)
    for i in range(count):
        images[i], masks[i] = lesion_image(seed, i, size, int(labels[i]) % len(CLASSES))
    return images, labels, masks


def write_folder(folder: str | Path, seed: int, count: int, size: int = 256) -> Path:
    """An ISIC-style folder of generated lesions: `<id>.png`, `<id>_segmentation.png` and
    `labels.csv` (image_id,dx), for `model_store.evaluate` and its tests."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels, masks = dataset(seed, count, size)
    rows = ["image_id,dx"]
    for i, (image, label, mask) in enumerate(zip(images, labels, masks, strict=True)):
        name = f"SYN_{seed:04d}_{i:05d}"
        Image.fromarray(image).save(folder / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}_segmentation.png")
        rows.append(f"{name},{CLASSES[int(label)][0]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder
