"""Heatmap pictures: the CAM grid coloured (turbo), with alpha, at the photo's aspect ratio."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dermcam.cam import upsample

HEATMAP_LONG_SIDE = 512

# Turbo colormap, polynomial fit (A. Mikhailov / R. Du): perceptually ordered, no LUT file.
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def heatmap_size(width: int, height: int, long_side: int = HEATMAP_LONG_SIDE) -> tuple[int, int]:
    """(w, h) with the upload's aspect ratio and a long side of at most `long_side`."""
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def turbo(values: np.ndarray) -> np.ndarray:
    """0–1 floats → uint8 RGB."""
    x = np.clip(values, 0.0, 1.0)[..., None]
    powers = x ** np.arange(6)
    rgb = powers @ _TURBO.T
    return (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def alpha(values: np.ndarray) -> np.ndarray:
    """0–1 floats → uint8 alpha: grows with the value, so what the model ignored stays
    transparent over the photo."""
    return (np.clip(values * 1.5, 0.0, 1.0) * 255).astype(np.uint8)


# Colour and alpha are both functions of one value, so a heatmap is a 256-entry palette
# image: 1 byte a pixel to build and compress instead of 4, and no float64 colour
# temporaries (≈ 20 MB at 512 px) in a function that lives in 128–256 MiB.
_LEVELS = np.linspace(0.0, 1.0, 256)
_PALETTE = turbo(_LEVELS).tobytes()
_ALPHA = alpha(_LEVELS).tobytes()


def heatmap_image(grid: np.ndarray, width: int, height: int) -> Image.Image:
    """The map upsampled to (width, height), coloured (turbo) with alpha, as a palette image
    (PNG with a tRNS chunk: every browser shows it as RGBA)."""
    values = np.clip(upsample(grid, width, height), 0.0, 1.0)
    levels = np.rint(values * 255.0).astype(np.uint8)
    image = Image.frombytes("P", (width, height), levels.tobytes())
    image.putpalette(_PALETTE)
    image.info["transparency"] = _ALPHA
    return image


def composite(photo: Image.Image, heatmap: Image.Image, opacity: float = 0.6) -> Image.Image:
    """The photo with the heatmap laid over it: a picture to save or put in a report."""
    base = photo.convert("RGB").resize(heatmap.size, Image.Resampling.BILINEAR).convert("RGBA")
    layer = np.asarray(heatmap.convert("RGBA")).copy()
    layer[..., 3] = (layer[..., 3].astype(np.float32) * opacity).astype(np.uint8)
    return Image.alpha_composite(base, Image.fromarray(layer)).convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 88) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
