"""The model's tensor made as its training pipeline made it, without TensorFlow: checked here
against TensorFlow and Pillow themselves, on real dermoscopy photographs."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import ISIC_IMAGES, encode
from dermcam import imaging, resize
from dermcam.errors import InvalidImage

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

LIMIT = 50_000_000
PHOTOS = sorted(ISIC_IMAGES.glob("*.jpg"))


def tf_pipeline(data: bytes, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """What a TensorFlow training pipeline (and sklesion's own predict) does to a JPEG."""
    image = tf.io.decode_jpeg(data, channels=3)
    return tf.image.resize(image, [height, width], method=method).numpy()


@pytest.mark.parametrize("shape", [(250, 250, 254, 254), (450, 600, 224, 224), (17, 33, 96, 64)])
def test_tf_bilinear_equals_tensorflow_to_the_bit(shape):
    h, w, out_h, out_w = shape
    pixels = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = tf.image.resize(pixels, [out_h, out_w]).numpy()
    got = resize.from_array(pixels, out_h, out_w, "tf-bilinear")[0]
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_tf_area_is_within_a_hundredth_of_tensorflow():
    pixels = np.random.default_rng(1).integers(0, 256, (600, 450, 3), dtype=np.uint8)
    expected = tf.image.resize(pixels, [299, 299], method="area").numpy()
    assert np.abs(resize.from_array(pixels, 299, 299, "tf-area")[0] - expected).max() < 0.01


def test_real_photographs_get_tensorflows_own_pixels():
    """Decode (libjpeg-turbo's fast DCT) and resize both, on 60 real dermoscopy images: where
    Pillow's decode differs from TensorFlow's by up to 3 levels, this does not at all."""
    model = imaging.ModelInput(254, 254, "tf-bilinear")
    for path in PHOTOS[::9]:
        data = path.read_bytes()
        decoded = imaging.decode(data, LIMIT, model)
        assert np.array_equal(decoded.tensor[0], tf_pipeline(data, 254, 254)), path.name
        assert decoded.image.size == (250, 250) and (decoded.width, decoded.height) == (250, 250)


def test_the_default_is_unchanged_and_differs_from_tensorflows():
    data = PHOTOS[0].read_bytes()
    decoded = imaging.decode(data, LIMIT, imaging.ModelInput(254, 254))
    assert np.array_equal(decoded.tensor, imaging.to_tensor(decoded.image, 254, 254))
    assert np.abs(decoded.tensor[0] - tf_pipeline(data, 254, 254)).max() > 1


@pytest.mark.parametrize("name", ["pil-bilinear", "pil-bicubic", "pil-nearest"])
def test_pillow_pipelines_resize_the_full_image(name, photo_jpeg):
    decoded = imaging.decode(photo_jpeg, LIMIT, imaging.ModelInput(224, 160, name))
    full = Image.open(io.BytesIO(photo_jpeg)).convert("RGB")
    filters = {"pil-bilinear": "BILINEAR", "pil-bicubic": "BICUBIC", "pil-nearest": "NEAREST"}
    expected = np.asarray(full.resize((160, 224), getattr(Image.Resampling, filters[name])))
    assert np.array_equal(decoded.tensor[0], expected.astype(np.float32))
    assert max(decoded.image.size) == imaging.WORKING_SIDE  # the heatmap's picture stays small


def test_a_12_megapixel_photo_through_tensorflows_pipeline(photo_jpeg):
    decoded = imaging.decode(photo_jpeg, LIMIT, imaging.ModelInput(254, 254, "tf-bilinear"))
    assert np.array_equal(decoded.tensor[0], tf_pipeline(photo_jpeg, 254, 254))
    assert max(decoded.image.size) == imaging.WORKING_SIDE
    assert (decoded.width, decoded.height) == (4000, 3000)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_tensorflows_pixels(orientation):
    """TensorFlow ignores EXIF; a phone photo is served upright all the same, every one of
    the eight orientations as Pillow's exif_transpose turns it."""
    rng = np.random.default_rng(orientation)
    picture = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(picture, "JPEG", quality=95, exif=exif.tobytes())
    decoded = imaging.decode(data, LIMIT, imaging.ModelInput(48, 80, "tf-bilinear"))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    ours = np.asarray(decoded.image)
    assert ours.shape == upright.shape
    assert np.abs(ours.astype(int) - upright.astype(int)).mean() < 3  # decoders differ a little
    assert (decoded.width, decoded.height) == (upright.shape[1], upright.shape[0])


def test_cmyk_jpegs_fall_back_to_pillow(lesion_rgb):
    data = encode(lesion_rgb.convert("CMYK"), "JPEG", quality=95)
    decoded = imaging.decode(data, LIMIT, imaging.ModelInput(64, 64, "tf-bilinear"))
    assert decoded.tensor.shape == (1, 64, 64, 3)


def test_a_truncated_jpeg_is_refused_in_tensorflows_pipeline_too(photo_jpeg):
    with pytest.raises(InvalidImage):
        imaging.decode(
            photo_jpeg[: len(photo_jpeg) // 3], LIMIT, imaging.ModelInput(64, 64, "tf-bilinear")
        )


def test_unknown_resize_is_refused():
    with pytest.raises(ValueError, match="unknown resize"):
        resize.check("lanczos")
