"""Shared fixtures: the committed demo model and small images made in code."""

from __future__ import annotations

import base64
import io
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "model_store" / "models" / "demo" / "1"
# 528 real dermoscopy photographs (ISIC archive, UDA-1, CC0): data/isic-uda1/README.md
ISIC = ROOT / "data" / "isic-uda1"
ISIC_IMAGES = ISIC / "images"


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    assert (DEMO_MODEL / "manifest.json").is_file(), "run `make demo` to build the demo model"
    return DEMO_MODEL


def post_multipart(url, data, filename="lesion.png", **fields):
    return requests.post(url, files={"image": (filename, data)}, data=fields, timeout=60)


def fetch_png(url):
    if url.startswith("data:"):
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def scoped_demo(tmp_path_factory) -> Path:
    """A copy of the demo calibrated with the feature scope rule too (the committed demo has
    only the quality bounds: docs/TRUST.md says why): the mechanism, end to end."""
    import shutil

    from model_store.calibration.cli import calibrate_on_generated

    model = tmp_path_factory.mktemp("scoped") / "demo"
    shutil.copytree(DEMO_MODEL, model)
    assert calibrate_on_generated(model, count=420, scope=True) == 0
    return model


@pytest.fixture(scope="session")
def lesion_rgb() -> Image.Image:
    """One synthetic melanoma-like image, 128×128 RGB."""
    from model_store.synthetic import lesion_image

    pixels, _ = lesion_image(seed=5, index=0, size=128, label=4)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def lesion_png(lesion_rgb: Image.Image) -> bytes:
    return encode(lesion_rgb, "PNG")


@pytest.fixture(scope="session")
def photo_jpeg(lesion_rgb: Image.Image) -> bytes:
    """A 12-megapixel JPEG, as a phone camera would send."""
    big = lesion_rgb.resize((4000, 3000), Image.Resampling.BILINEAR)
    noise = np.random.default_rng(0).integers(0, 8, (3000, 4000, 1), dtype=np.uint8)
    big = Image.fromarray(np.asarray(big) + noise)
    return encode(big, "JPEG", quality=90)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The whole local stack on free ports: fake-gcs-server, both functions, the page."""
    from devstack import stack as devstack

    # The filesystem backend, as `make run` uses: it keeps object metadata in an extended
    # attribute (about 3 KB on ext4), a limit the in-memory backend would hide.
    running = devstack.start(
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        storage_root=tmp_path_factory.mktemp("storage"),
    )
    # Warm, as the scheduler keeps it: a cold gradcam answers its first heatmap inline
    # (test_functions_http.py tests that on an instance of its own).
    urllib.request.urlopen(f"{running.gradcam_url}?warmup=1", timeout=60).close()  # noqa: S310
    yield running
    running.stop()


@pytest.fixture
def single_function(tmp_path):
    """Start one function (and optionally its own emulator) with extra environment.

    Returns start(name, env=None, with_storage=True) -> (function_url, storage_server|None)."""
    from harness import servers, storage

    started = []

    def start(name: str, env: dict | None = None, with_storage: bool = True):
        storage_url, emulator = "http://127.0.0.1:9", None  # port 9: nothing listens
        if with_storage:
            emulator = storage.start_storage(
                servers.free_port(), open(tmp_path / "storage.log", "ab")
            )
            started.append(emulator)
            storage_url = emulator.url
            storage.wait_storage(emulator)
            storage.create_bucket(storage_url, "dermcam-heatmaps")
        log = open(tmp_path / f"{name}.log", "ab")
        server = servers.start_function(
            name, env=servers.function_env(storage_url, "dermcam-heatmaps", env), log=log
        )
        started.append(server)
        server.wait_up(60)
        return server.url, emulator

    yield start

    servers.stop_all(started)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium under Playwright (Playwright cannot download its own here)."""
    from playwright.sync_api import sync_playwright

    from devstack import browser as chromium

    with sync_playwright() as playwright:
        launched = chromium.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def faulty_folder():
    """An ISIC-style folder of generated lesions with an archive's usual faults: an image that
    does not decode (broken), one labelled with a class no model has (lost, 'sarcoma') and
    the last one without its mask. make(folder, seed, count) -> folder."""
    from model_store.synthetic import write_folder

    def make(folder: Path, seed: int, count: int) -> Path:
        images = write_folder(folder, seed=seed, count=count, size=160)
        first, last = f"SYN_{seed:04d}_00000", f"SYN_{seed:04d}_{count - 1:05d}"
        (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        mask = (images / f"{first}_segmentation.png").read_bytes()
        (images / "broken_segmentation.png").write_bytes(mask)
        (images / "lost.png").write_bytes((images / f"{first}.png").read_bytes())
        (images / "lost_segmentation.png").write_bytes(mask)
        (images / f"{last}_segmentation.png").unlink()
        rows = (images / "labels.csv").read_text().splitlines() + ["broken,mel", "lost,sarcoma"]
        (images / "labels.csv").write_text("\n".join(rows) + "\n")
        return images

    return make
