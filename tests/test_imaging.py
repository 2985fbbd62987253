import io

import numpy as np
import pytest
from PIL import Image

from conftest import encode
from dermcam import imaging
from dermcam.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

LIMIT = 50_000_000


def test_png_round_trip(lesion_png, lesion_rgb):
    decoded = imaging.decode(lesion_png, LIMIT)
    assert (decoded.width, decoded.height, decoded.format) == (128, 128, "PNG")
    assert decoded.image.mode == "RGB"
    assert np.array_equal(np.asarray(decoded.image), np.asarray(lesion_rgb))
    assert len(decoded.sha256) == 64


def test_webp_is_served(lesion_rgb):
    decoded = imaging.decode(encode(lesion_rgb, "WEBP", quality=90), LIMIT)
    assert decoded.format == "WEBP" and decoded.image.size == (128, 128)


def test_large_jpeg_is_draft_decoded_to_working_size(photo_jpeg):
    decoded = imaging.decode(photo_jpeg, LIMIT)
    assert (decoded.width, decoded.height) == (4000, 3000)  # the upload's size is reported
    assert max(decoded.image.size) == imaging.WORKING_SIDE
    assert decoded.image.size == (512, 384)


def test_exif_orientation_is_honoured():
    # A landscape pixel grid with orientation 6 (rotate 90° CW) is a portrait photo.
    pixels = np.zeros((60, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    decoded = imaging.decode(data, LIMIT)
    assert (decoded.width, decoded.height) == (60, 100)
    upright = np.asarray(decoded.image).astype(int)
    assert upright[5, 30, 0] > 200 and upright[-5, 30, 0] < 60  # red moved to the top


@pytest.mark.parametrize(
    "mode, colour",
    [
        ("RGBA", (200, 30, 30, 255)),
        ("LA", (90, 255)),
        ("L", 90),
        ("P", 3),
        ("CMYK", (0, 200, 200, 0)),
    ],
)
def test_every_mode_becomes_rgb(mode, colour):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = Image.new(mode, (32, 24), colour)
    decoded = imaging.decode(encode(image, fmt), LIMIT)
    assert decoded.image.mode == "RGB" and decoded.image.size == (32, 24)


def test_transparent_pixels_are_laid_on_white():
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    decoded = imaging.decode(encode(image, "PNG"), LIMIT)
    assert np.asarray(decoded.image).min() == 255


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 16).reshape(16, 64)).astype(np.uint16)
    decoded = imaging.decode(encode(Image.fromarray(ramp), "PNG"), LIMIT)
    grey = np.asarray(decoded.image)[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and 100 < grey.mean() < 155


def test_truncated_jpeg_is_invalid(photo_jpeg):
    with pytest.raises(InvalidImage):
        imaging.decode(photo_jpeg[: len(photo_jpeg) // 3], LIMIT)


def test_corrupt_png_is_invalid(lesion_png):
    broken = bytearray(lesion_png)
    broken[60:200] = bytes(140)
    with pytest.raises(InvalidImage):
        imaging.decode(bytes(broken), LIMIT)


@pytest.mark.parametrize("data", [b"", b"hello world", b"<html><body>x</body></html>", b"\xff\xd8"])
def test_non_images_are_invalid(data):
    with pytest.raises(InvalidImage):
        imaging.decode(data, LIMIT)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP"])
def test_other_formats_are_unsupported(fmt, lesion_rgb):
    with pytest.raises(UnsupportedMediaType):
        imaging.decode(encode(lesion_rgb, fmt), LIMIT)


def test_pixel_guard_rejects_before_decoding():
    # 20000×20000 of one colour compresses to a few hundred kB: a decompression bomb.
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    with pytest.raises(PayloadTooLarge):
        imaging.decode(buffer.getvalue(), LIMIT)


def test_tiny_images_are_invalid():
    with pytest.raises(InvalidImage):
        imaging.decode(encode(Image.new("RGB", (1, 1)), "PNG"), LIMIT)


def test_tensor_is_float_rgb_0_255(lesion_rgb):
    tensor = imaging.to_tensor(lesion_rgb, 96, 64)
    assert tensor.shape == (1, 96, 64, 3) and tensor.dtype == np.float32
    assert 0 <= tensor.min() and tensor.max() <= 255
