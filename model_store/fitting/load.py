"""What a fit check sends a function, and how the function is configured for it: distinct
uploads as the page sends them (small PNGs, 12-megapixel JPEG photos), one request and one
thread at a time, as deployed with concurrency 1, each after a pause (`REQUEST_GAP_S`)."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from dermcam.manifest import read_manifest
from harness import servers, storage
from model_store.synthetic import dataset, lesion_image

# Warm requests are sent one at a time with this pause before each, as a clinic's users send
# them (seconds apart), not back to back: at a fraction of a vCPU, back-to-back requests
# share each 100 ms CFS period's quota, so whether a request waits for the next period
# depended on the one before it, and the p50 of two runs of one configuration differed up to
# tenfold (89 ms and 9 ms for the demo's predict at 0.167 vCPU). After a pause longer than two
# periods every request starts with its quota whole, as a user's does.
REQUEST_GAP_S = 0.25


def server_env(
    model_dir: str | Path, engine: str, storage_url: str | None, bucket: str
) -> dict[str, str]:
    """A function server as deployed with concurrency 1: one request, one thread at a time."""
    return servers.function_env(
        storage_url or "http://127.0.0.1:9",
        bucket,
        {
            "DERMCAM_MODEL_DIR": str(Path(model_dir).resolve()),
            "DERMCAM_ENGINE": engine,
            # the generated uploads are not the model's photographs: screened (its cost is
            # in the figures) but answered, so the whole path is what gets measured
            "DERMCAM_SCOPE": "measure",
            "DERMCAM_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1",
            "THREADS": "1",  # gunicorn threads
        },
    )


def start_server(
    function: str,
    model_dir: str | Path,
    log_path: Path,
    *,
    engine: str = "litert",
    storage_url: str | None = None,
    env: dict[str, str] | None = None,
    **options: object,
) -> servers.Server:
    """A function's server as measured: in the runtime venv (for LiteRT), with a bucket of
    its own when there is storage, page cache dropped first. `options` go to
    `servers.start_function` (memory_mb, cpu_share, count_cpu, source)."""
    bucket = f"fit-{uuid.uuid4().hex[:10]}"  # a fresh bucket: nothing is cached
    if storage_url:
        storage.create_bucket(storage_url, bucket)
    environment = {**server_env(model_dir, engine, storage_url, bucket), **(env or {})}
    python, _ = servers.runtime_python(engine)
    with open(log_path, "ab") as log:
        return servers.start_function(
            function, env=environment, log=log, python=python, drop_cache=True, **options
        )


@dataclass(frozen=True)
class Upload:
    kind: str  # "small" (256 px PNG) or "large" (4000×3000 JPEG)
    data: bytes
    content_type: str


def request_plan(count: int, seed: int = 11) -> list[Upload]:
    """`count` distinct uploads, every third a 12-megapixel JPEG photo."""
    large_count = count // 3
    small, _, _ = dataset(seed, count - large_count, 256)
    plan = []
    base, _ = lesion_image(seed, 10_000, 256, 4)
    photo = np.asarray(Image.fromarray(base).resize((4000, 3000), Image.Resampling.BILINEAR))
    rng = np.random.default_rng(seed)
    jpegs = []
    for _ in range(large_count):
        variant = photo.copy()
        y, x = rng.integers(0, 2900), rng.integers(0, 3900)
        variant[y : y + 100, x : x + 100] = rng.integers(0, 255, 3, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(variant).save(buffer, "JPEG", quality=90)
        jpegs.append(Upload("large", buffer.getvalue(), "image/jpeg"))
    for i, pixels in enumerate(small):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        plan.append(Upload("small", buffer.getvalue(), "image/png"))
        if i % 2 == 1 and jpegs:
            plan.append(jpegs.pop())
    return plan  # plan[0] is the cold-start request


def class_count(model_dir: str | Path) -> int:
    """How many classes the exported model answers: gradcam is asked for each in turn, and a
    class the model does not have is a 422, not a measurement."""
    return len(read_manifest(model_dir).labels)


def post_upload(
    session: requests.Session,
    url: str,
    upload: Upload,
    function: str,
    target: int | None,
    timeout: float = 60.0,
) -> requests.Response:
    """One upload; gradcam is asked for class `target`, or (None) for the top class, as the
    page's first call for a photo asks."""
    params = {"class": str(target)} if function == "gradcam" and target is not None else None
    return session.post(
        url,
        data=upload.data,
        params=params,
        timeout=timeout,
        headers={"Content-Type": upload.content_type},
    )


def with_storage(check, model_dir, functions: tuple[str, ...], warm: int, **options) -> dict:  # noqa: ANN001
    """A fit check (`exhaustive.check` or `predicted.check`) with a storage emulator of its
    own, for gradcam's uploads."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, storage.storage_emulator(Path(tmp)) as url:
        return check(model_dir, functions, warm, url, **options)
