"""Bytes → upright RGB image → model tensor, without ever holding a full-size float array.

Order matters (measured in FINDINGS.md): open → check size → JPEG draft → EXIF transpose →
convert to RGB → resize. The draft lets libjpeg decode a 12-megapixel photo at 1/2–1/8 scale:
dermcam's default. A model whose manifest names its training pipeline's decode and resize
(`resize`) is given exactly those pixels instead, from the full-resolution decode; the picture
kept for the heatmap is then made small separately.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dermcam import resize
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
class ModelInput:
    """What the model takes: its size, and how its training pipeline resized (`resize`)."""

    height: int
    width: int
    resize: str = resize.DEFAULT


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded: upright RGB at working size, plus facts about the original, and the
    model's tensor when `decode` was told the model's input."""

    image: Image.Image  # RGB, long side <= WORKING_SIDE
    width: int  # of the upload, upright
    height: int
    format: str
    sha256: str
    tensor: np.ndarray | None = None  # float32 [1, H, W, 3], 0–255, as the model was trained


def sniff_format(data: bytes) -> str | None:
    """Name of the image format the bytes start with, or None."""
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if name == "WEBP" and data[:4] != b"RIFF":
                continue
            return name
    return None


def _to_rgb(im: Image.Image, keep_alpha_colour: bool = False) -> Image.Image:
    """Every Pillow mode to 8-bit RGB; transparency is laid on white, or (`keep_alpha_colour`,
    as TensorFlow's and Pillow's own pipelines do) dropped with the colour kept."""
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
    if keep_alpha_colour:
        return im.convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def decode(data: bytes, max_pixels: int, model: ModelInput | None = None) -> DecodedImage:
    """Decode an upload (and make the model's tensor the way its training pipeline did, when
    `model` is given). Raises InvalidImage, UnsupportedMediaType or PayloadTooLarge."""
    if not data:
        raise InvalidImage("The image is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidImage("The upload is not a JPEG, PNG or WebP image.")
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(f"{fmt} images are not supported; send JPEG, PNG or WebP.")
    how = resize.decoder(model.resize) if model else "draft"
    tensor = None
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
            pixels = _fast_dct_jpeg(data, im) if how == "tf" and fmt == "JPEG" else None
            if pixels is not None:  # TensorFlow's own decode, upright
                tensor = resize.from_array(pixels, model.height, model.width, model.resize)
                rgb = _working(Image.fromarray(_subsampled(pixels)))
            else:
                if how == "draft" and fmt == "JPEG":
                    im.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
                im.load()  # decode now: a corrupt stream raises here, not half-way later
                rgb = _to_rgb(_upright(im), keep_alpha_colour=how != "draft")
                if how != "draft" and model is not None:  # from the full image, as trained
                    tensor = resize.from_image(rgb, model.height, model.width, model.resize)
                rgb = _working(rgb, full=how != "draft")
    except (PayloadTooLarge, InvalidImage):
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge("The image's dimensions are too large.") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"The {fmt} image is corrupt or truncated.") from exc
    if tensor is None and model is not None:
        tensor = to_tensor(rgb, model.height, model.width)
    upright_w, upright_h = (height, width) if _rotates(rgb, width, height) else (width, height)
    return DecodedImage(
        image=rgb,
        width=upright_w,
        height=upright_h,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        tensor=tensor,
    )


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except (ValueError, KeyError, TypeError, SyntaxError, struct.error):
        return im  # a broken EXIF block must not lose the photo: keep it as stored


def _working(rgb: Image.Image, full: bool = False) -> Image.Image:
    """The picture kept for the heatmap and the composite: long side <= WORKING_SIDE. A full
    decode of a large photo is first reduced by whole pixels (a box step, cheap)."""
    if full and max(rgb.size) > 2 * WORKING_SIDE:
        rgb = rgb.reduce(max(rgb.size) // (2 * WORKING_SIDE))
    rgb.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BILINEAR)
    return rgb


def _subsampled(pixels: np.ndarray) -> np.ndarray:
    """Every k-th pixel of a large array (a view), so the working copy stays small."""
    step = max(1, max(pixels.shape[:2]) // (2 * WORKING_SIDE))
    return np.ascontiguousarray(pixels[::step, ::step])


# EXIF orientation → the NumPy view that makes the pixels upright (as ImageOps.exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _fast_dct_jpeg(data: bytes, im: Image.Image) -> np.ndarray | None:
    """A JPEG as `tf.io.decode_jpeg` decodes it by default (libjpeg-turbo, fast integer DCT,
    fancy upsampling), upright; None for what libjpeg cannot turn into RGB (CMYK): Pillow
    decodes those. Raises ValueError for a corrupt stream."""
    import simplejpeg  # libjpeg-turbo with the DCT choice Pillow does not expose

    if im.mode not in ("RGB", "L"):
        return None
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
    try:
        orientation = im.getexif().get(0x0112, 1)
    except (ValueError, KeyError, TypeError, SyntaxError, struct.error):
        orientation = 1
    return _ORIENT.get(orientation, lambda a: a)(pixels)


def _rotates(rgb: Image.Image, width: int, height: int) -> bool:
    """Whether EXIF transposition swapped the sides (compares orientation, not size)."""
    if width == height:
        return False
    return (rgb.width > rgb.height) != (width > height)


def to_tensor(image: Image.Image, height: int, width: int) -> np.ndarray:
    """RGB image → float32 [1, H, W, 3] in 0–255, as every exported artifact expects, by
    dermcam's own default (`draft-bilinear`: Pillow bilinear from the working image)."""
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)[None, ...]
