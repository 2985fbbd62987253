"""How a model's training pipeline read and resized its images, redone without TensorFlow.

A model answers best, and as its authors measured it, when it is served the pixels its
training pipeline made. Libraries differ in both steps: TensorFlow's `tf.io.decode_jpeg`
uses libjpeg-turbo's fast integer DCT where Pillow uses the accurate one (up to 3 levels
apart per pixel), and `tf.image.resize` samples bilinearly without antialiasing where Pillow
averages. On a real HAM10000 network either difference alone moves probabilities by up to
0.05. The manifest's `input.resize` names the pipeline; `decode` in `imaging` follows it:

- `draft-bilinear` (dermcam's default for models that say nothing): JPEGs decoded at reduced
  scale (Pillow's draft) to at least the working size, then Pillow bilinear. Fast and light
  on 12-megapixel photos; close to, not equal to, `pil-bilinear`.
- `tf-bilinear`: `tf.io.decode_jpeg` / `decode_image` defaults, then `tf.image.resize`
  bilinear (half-pixel centres, no antialiasing): TensorFlow's defaults, and Keras'
  `image_dataset_from_directory`. Decoded here by simplejpeg (the same libjpeg-turbo, fast
  DCT, fancy upsampling: equal to TensorFlow's pixels), resized in NumPy.
- `tf-area`: the same decode, then `tf.image.resize(method="area")`.
- `pil-bilinear`, `pil-bicubic`, `pil-nearest`: Pillow's decode, then `Image.resize` from the
  full image (antialiased where Pillow antialiases): torchvision's `Resize` on PIL images
  (bilinear), timm's eval transforms (bicubic), `keras.utils.load_img` and
  `ImageDataGenerator` (nearest).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT = "draft-bilinear"
RESIZES = {
    "draft-bilinear": "JPEG draft to the working size, Pillow bilinear (dermcam's default)",
    "tf-bilinear": "tf.io.decode_jpeg defaults + tf.image.resize bilinear, no antialiasing "
    "(TensorFlow's defaults; Keras' image_dataset_from_directory)",
    "tf-area": "tf.io.decode_jpeg defaults + tf.image.resize area",
    "pil-bilinear": "Pillow decode + Image.resize BILINEAR from the full image "
    "(torchvision's Resize on PIL images)",
    "pil-bicubic": "Pillow decode + Image.resize BICUBIC from the full image (timm's eval)",
    "pil-nearest": "Pillow decode + Image.resize NEAREST from the full image "
    "(keras.utils.load_img, ImageDataGenerator)",
}
_PIL_FILTERS = {
    "pil-bilinear": Image.Resampling.BILINEAR,
    "pil-bicubic": Image.Resampling.BICUBIC,
    "pil-nearest": Image.Resampling.NEAREST,
}


def check(name: str) -> str:
    if name not in RESIZES:
        raise ValueError(f"unknown resize {name!r}; use one of: {', '.join(RESIZES)}")
    return name


def decoder(name: str) -> str:
    """Which decode the pipeline used: `draft` (dermcam's), `tf` or `pil`."""
    return check(name).split("-", 1)[0]


def from_image(image: Image.Image, height: int, width: int, name: str) -> np.ndarray:
    """RGB Pillow image → float32 [1, H, W, 3], 0–255, by a Pillow pipeline (or dermcam's,
    whose image is already at working size)."""
    if decoder(name) == "tf":
        return from_array(np.asarray(image), height, width, name)
    resample = _PIL_FILTERS.get(name, Image.Resampling.BILINEAR)
    resized = image.resize((width, height), resample)
    return np.asarray(resized, dtype=np.float32)[None, ...]


def from_array(pixels: np.ndarray, height: int, width: int, name: str) -> np.ndarray:
    """uint8 [h, w, 3] → float32 [1, H, W, 3] as `tf.image.resize` computes it."""
    if name == "tf-area":
        return _area(pixels, height, width)[None, ...]
    return _bilinear(pixels, height, width)[None, ...]


def _bilinear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorFlow's ResizeBilinear(half_pixel_centers=True) sample points, in float32 as its
    kernel computes them: in = (out + 0.5) * scale - 0.5, clamped at the edges."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.intp)
    return lower, upper, (position - floor).astype(np.float32)


def _bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    top, bottom, y_lerp = _bilinear_weights(pixels.shape[0], height)
    left, right, x_lerp = _bilinear_weights(pixels.shape[1], width)
    # Only the rows and columns sampled are read: a 12-megapixel photo is never made float.
    rows_top = pixels[top].astype(np.float32)
    rows_bottom = pixels[bottom].astype(np.float32)
    x = x_lerp[None, :, None]
    top_row = rows_top[:, left] + (rows_top[:, right] - rows_top[:, left]) * x
    bottom_row = rows_bottom[:, left] + (rows_bottom[:, right] - rows_bottom[:, left]) * x
    return top_row + (bottom_row - top_row) * y_lerp[:, None, None]


def _area_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] share of each input pixel in each output pixel (ResizeArea, no corner
    alignment), in float32 as its kernel computes them: output pixel i covers input
    [i·s, (i+1)·s), s = in / out. Equal to TensorFlow's values within 0.01 (of 0–255)."""
    scale = np.float32(in_size) / np.float32(out_size)
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    for i in range(out_size):
        start, end = np.float32(i) * scale, np.float32(i + 1) * scale
        for j in range(int(np.floor(start)), min(int(np.ceil(end)), in_size)):
            weights[i, j] = min(end, np.float32(j + 1)) - max(start, np.float32(j))
    return weights / scale


def _area(pixels: np.ndarray, height: int, width: int, chunk: int = 256) -> np.ndarray:
    rows = _area_weights(pixels.shape[0], height)
    cols = _area_weights(pixels.shape[1], width)
    # Input rows a chunk at a time, so a large photo is never made float all at once.
    out = np.zeros((height, pixels.shape[1], pixels.shape[2]), dtype=np.float32)
    for start in range(0, pixels.shape[0], chunk):
        block = pixels[start : start + chunk].astype(np.float32)
        out += np.tensordot(rows[:, start : start + chunk], block, axes=1)
    return np.einsum("xj,yjc->yxc", cols, out)
