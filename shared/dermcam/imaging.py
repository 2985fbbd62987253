"""Bytes → upright RGB image → model tensor, without ever holding a full-size float array.

Order matters (measured in FINDINGS.md): open → check size → JPEG draft → EXIF transpose →
convert to RGB → resize. The draft lets libjpeg decode a 12-megapixel photo at 1/2–1/8 scale.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dermcam.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP")
WORKING_SIDE = 512  # long side kept for the tensor, the heatmap and the composite
MIN_SIDE = 8

# Magic numbers of formats we recognise; only the first three are served.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"WEBP", 8, "WEBP"),
    (b"GIF8", 0, "GIF"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"BM", 0, "BMP"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"%PDF", 0, "PDF"),
)

# Pillow's own bomb check must not fire before ours; ours gives the 413.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded: upright RGB at working size, plus facts about the original."""

    image: Image.Image  # RGB, long side <= WORKING_SIDE
    width: int  # of the upload, upright
    height: int
    format: str
    sha256: str


def sniff_format(data: bytes) -> str | None:
    """Name of the image format the bytes start with, or None."""
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if name == "WEBP" and data[:4] != b"RIFF":
                continue
            return name
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Every Pillow mode to 8-bit RGB; transparency is laid on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit and 32-bit grayscale: Pillow's convert("L") clips instead of scaling.
        arr = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def decode(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode an upload. Raises InvalidImage, UnsupportedMediaType or PayloadTooLarge."""
    if not data:
        raise InvalidImage("The image is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImage("The upload is not a JPEG, PNG or WebP image.")
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(f"{fmt} images are not supported; send JPEG, PNG or WebP.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = im.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"The image has {width}x{height} pixels; the limit is {max_pixels:,} pixels."
                )
            if min(width, height) < MIN_SIDE:
                raise InvalidImage(
                    f"The image is {width}x{height}; it must be at least {MIN_SIDE} pixels a side."
                )
            if fmt == "JPEG":
                im.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
            im.load()  # decode now: a corrupt stream raises here, not half-way later
            try:
                im = ImageOps.exif_transpose(im)
            except (ValueError, KeyError, TypeError, SyntaxError, struct.error):
                pass  # a broken EXIF block must not lose the photo: keep it as stored
            rgb = _to_rgb(im)
            rgb.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BILINEAR)
    except (PayloadTooLarge, InvalidImage):
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge("The image's dimensions are too large.") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"The {fmt} image is corrupt or truncated.") from exc
    upright_w, upright_h = (height, width) if _rotates(rgb, width, height) else (width, height)
    return DecodedImage(
        image=rgb,
        width=upright_w,
        height=upright_h,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _rotates(rgb: Image.Image, width: int, height: int) -> bool:
    """Whether EXIF transposition swapped the sides (compares orientation, not size)."""
    if width == height:
        return False
    return (rgb.width > rgb.height) != (width > height)


def to_tensor(image: Image.Image, height: int, width: int) -> np.ndarray:
    """RGB image → float32 [1, H, W, 3] in 0–255, as every exported artifact expects."""
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)[None, ...]
