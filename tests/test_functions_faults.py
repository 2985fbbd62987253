"""The functions' faults over HTTP: a missing or damaged model is a 503 that heals without a
restart, and storage frozen or killed still gives the heatmap inline."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
import requests
from PIL import Image

from conftest import encode, fetch_png, post_multipart


def test_missing_model_is_503_then_recovers(single_function, lesion_png, tmp_path, demo_model_dir):
    model_dir = tmp_path / "model"
    url, _ = single_function(
        "predict", env={"DERMCAM_MODEL_DIR": str(model_dir)}, with_storage=False
    )
    for attempt in (
        requests.get(url, params={"warmup": "1"}, timeout=30),
        post_multipart(url, lesion_png),
    ):
        assert attempt.status_code == 503
        assert attempt.json()["error"]["code"] == "model_unavailable"
    shutil.copytree(demo_model_dir, model_dir)  # the fault is fixed: no restart needed
    assert post_multipart(url, lesion_png).status_code == 200


@pytest.mark.parametrize("fault", ["truncated", "checksum"])
def test_damaged_artifact_is_503_then_recovers(
    single_function, lesion_png, tmp_path, demo_model_dir, fault
):
    model_dir = tmp_path / "model"
    shutil.copytree(demo_model_dir, model_dir)
    artifact = model_dir / "gradcam.tflite"
    good = artifact.read_bytes()
    if fault == "truncated":
        artifact.write_bytes(good[: len(good) // 2])
    else:
        artifact.write_bytes(good[:5000] + bytes([good[5000] ^ 0xFF]) + good[5001:])
    url, _ = single_function("gradcam", env={"DERMCAM_MODEL_DIR": str(model_dir)})
    for attempt in (
        requests.get(url, params={"warmup": "1"}, timeout=30),
        post_multipart(url, lesion_png),
    ):
        assert attempt.status_code == 503
        error = attempt.json()["error"]
        assert error["code"] == "model_unavailable" and "checksum" in error["message"]
    artifact.write_bytes(good)  # the fault is gone: the next request loads the model
    assert post_multipart(url, lesion_png).status_code == 200


def test_storage_frozen_then_killed_gives_inline_heatmaps(single_function, lesion_rgb):
    url, storage = single_function("gradcam", env={"DERMCAM_STORAGE_BACKOFF_S": "2"})
    requests.get(url, params={"warmup": "1"}, timeout=60)
    first = encode(lesion_rgb.rotate(180), "PNG")
    assert post_multipart(url, first).json()["heatmap"]["stored"] is True

    os.killpg(storage.proc.pid, signal.SIGSTOP)  # frozen: connections hang
    try:
        started = time.monotonic()
        body = post_multipart(url, encode(lesion_rgb.rotate(270), "PNG")).json()
        print(f"frozen storage: inline heatmap after {time.monotonic() - started:.2f} s")
        assert time.monotonic() - started < 10
        assert body["heatmap"]["stored"] is False and body["heatmap"]["object"] is None
        assert fetch_png(body["heatmap"]["url"]).has_transparency_data
    finally:
        os.killpg(storage.proc.pid, signal.SIGCONT)
    time.sleep(2.5)  # past the back-off: storage is tried again
    assert post_multipart(url, first).json()["heatmap"]["cached"] is True

    os.killpg(storage.proc.pid, signal.SIGKILL)  # dead: connections refused
    started = time.monotonic()
    body = post_multipart(
        url, encode(lesion_rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
    ).json()
    print(f"dead storage: inline heatmap after {time.monotonic() - started:.2f} s")
    assert time.monotonic() - started < 10
    assert body["heatmap"]["stored"] is False and body["heatmap"]["url"].startswith(
        "data:image/png"
    )
