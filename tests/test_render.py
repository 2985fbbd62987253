"""Heatmap pictures: the palette PNG shows the same colours and alpha as the turbo map."""

import io

import numpy as np
from PIL import Image

from dermcam import cam, render


def grid(seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).random((7, 7)).astype(np.float32)
    return cam.normalise(values)


def rgba_of(png: bytes) -> np.ndarray:
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.has_transparency_data
    return np.asarray(picture.convert("RGBA")).astype(int)


def test_heatmap_size_keeps_the_aspect_ratio_and_never_upscales():
    assert render.heatmap_size(4000, 3000) == (512, 384)
    assert render.heatmap_size(3000, 4000) == (384, 512)
    assert render.heatmap_size(200, 100) == (200, 100)
    assert render.heatmap_size(10_000, 1) == (512, 1)


def test_palette_png_matches_turbo_colours_and_alpha_per_pixel():
    g = grid()
    decoded = rgba_of(render.png_bytes(render.heatmap_image(g, 512, 384)))
    assert decoded.shape == (384, 512, 4)
    values = np.clip(cam.upsample(g, 512, 384), 0.0, 1.0)
    direct = np.dstack([render.turbo(values), render.alpha(values)]).astype(int)
    # 256 levels instead of float values: a colour step of at most a few units.
    assert np.abs(decoded - direct).max() <= 6
    assert np.abs(decoded - direct).mean() < 1.0


def test_what_the_model_ignored_is_transparent_and_the_peak_is_opaque():
    g = np.zeros((4, 4), np.float32)
    g[1, 1] = 1.0
    decoded = rgba_of(render.png_bytes(render.heatmap_image(g, 64, 64)))
    assert decoded[..., 3].min() == 0 and decoded[..., 3].max() == 255
    assert decoded[63, 63, 3] == 0  # far from the peak


def test_composite_is_the_photo_under_the_heatmap():
    photo = Image.new("RGB", (800, 600), (10, 200, 30))
    g = np.zeros((4, 4), np.float32)
    g[0, 0] = 1.0
    picture = render.composite(photo, render.heatmap_image(g, 512, 384))
    assert picture.mode == "RGB" and picture.size == (512, 384)
    pixels = np.asarray(picture).astype(int)
    assert np.abs(pixels[383, 511] - [10, 200, 30]).max() <= 1  # transparent: the photo
    assert np.abs(pixels[0, 0] - [10, 200, 30]).max() > 40  # the map laid over it
