"""Hostile and odd inputs against a gradcam server held to a 256 MiB memory tier, and many
clients at once: right 4xx or a correct answer, the server stays up and inside its tier,
and a rejected request writes nothing to the bucket."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import threading
import time
import urllib.request
import zipfile
import zlib

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import encode
from harness import memgroup, servers, storage

TIER_MB = 256


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height, with one tiny IDAT: what a crafted file is."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, "PNG")
    return buffer.getvalue()


def exif_rotated(lesion: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(lesion.resize((160, 120)), "JPEG", exif=exif)


def polyglot(jpeg: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "a JPEG that is also a ZIP")
    return jpeg + archive.getvalue()


def animated_gif(lesion: Image.Image) -> bytes:
    frames = [lesion.convert("P"), lesion.rotate(90).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def raw(data: bytes, ctype: str | None = "image/png", **params):
    headers = {"Content-Type": ctype} if ctype else {}
    return {"data": data, "headers": headers, "params": params}


def corpus(lesion: Image.Image) -> list[tuple[str, dict, int, str | None]]:
    """(name, request kwargs, expected status, expected error code or None for 200)."""
    png, jpeg = encode(lesion, "PNG"), encode(lesion, "JPEG", quality=92)
    webp = encode(lesion, "WEBP")
    broken_png = bytearray(png)
    broken_png[60:200] = bytes(140)
    sixteen = encode(
        Image.fromarray(np.asarray(lesion.convert("L")).astype(np.uint16) * 257), "PNG"
    )
    return [
        ("empty body", raw(b""), 400, "invalid_image"),
        ("non-image bytes", raw(b"\x00\x01binary junk" * 20), 400, "invalid_image"),
        (
            "HTML as JPEG",
            raw(b"<!doctype html><script>alert(1)</script>", "image/jpeg"),
            400,
            "invalid_image",
        ),
        (
            "SVG as PNG",
            raw(b'<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>'),
            400,
            "invalid_image",
        ),
        ("script as WebP", raw(b"#!/bin/sh\nrm -rf /\n", "image/webp"), 400, "invalid_image"),
        ("truncated JPEG", raw(jpeg[: len(jpeg) // 2], "image/jpeg"), 400, "invalid_image"),
        ("corrupt PNG", raw(bytes(broken_png)), 400, "invalid_image"),
        ("truncated WebP", raw(webp[: len(webp) // 2], "image/webp"), 400, "invalid_image"),
        ("0x0 PNG", raw(png_with_size(0, 0)), 400, "invalid_image"),
        ("1x1 PNG", raw(encode(Image.new("RGB", (1, 1)), "PNG")), 400, "invalid_image"),
        ("decompression bomb", raw(bomb_png()), 413, "payload_too_large"),
        (
            "PNG header claiming 1e5 x 1e5",
            raw(png_with_size(100000, 100000)),
            413,
            "payload_too_large",
        ),
        (
            "over the size limit",
            raw(b"\xff\xd8\xff" + b"0" * (10 * 1024 * 1024), "image/jpeg"),
            413,
            "payload_too_large",
        ),
        (
            "chunked upload over the limit",
            raw(iter([b"\xff\xd8\xff" + b"0" * (1 << 20)] * 11), "image/jpeg"),
            413,
            "payload_too_large",
        ),
        (
            "chunked multipart over the limit",
            {
                "data": iter(
                    [
                        b'--b\r\nContent-Disposition: form-data; name="image"; '
                        b'filename="a.jpg"\r\n\r\n'
                    ]
                    + [b"0" * (1 << 20)] * 11
                ),
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            413,
            "payload_too_large",
        ),
        (
            "chunked text over the limit",
            raw(iter([b"x" * (1 << 20)] * 11), "text/plain"),
            415,
            "unsupported_media_type",
        ),
        ("wrong content type", raw(png, "text/plain"), 415, "unsupported_media_type"),
        ("missing content type", raw(png, None), 415, "unsupported_media_type"),
        ("multipart without the field", {"files": {"photo": ("a.png", png)}}, 400, "bad_request"),
        (
            "multipart with two files",
            {"files": [("image", ("a.png", png)), ("image", ("b.png", png))]},
            400,
            "bad_request",
        ),
        (
            "multipart with an empty file",
            {"files": {"image": ("a.png", b"")}},
            400,
            "invalid_image",
        ),
        ("invalid base64", {"json": {"image": "!!!not base64!!!"}}, 400, "bad_request"),
        ("JSON with a number for image", {"json": {"image": 12345}}, 400, "bad_request"),
        (
            "JSON with a list for class",
            {"json": {"image": base64.b64encode(png).decode(), "class": [1]}},
            400,
            "bad_request",
        ),
        ("JSON list body", {"json": [1, 2, 3]}, 400, "bad_request"),
        ("animated GIF", raw(animated_gif(lesion), "image/png"), 415, "unsupported_media_type"),
        ("TIFF", raw(encode(lesion, "TIFF"), "image/png"), 415, "unsupported_media_type"),
        ("BMP", raw(encode(lesion, "BMP"), "image/png"), 415, "unsupported_media_type"),
        ("class out of range", raw(png, **{"class": "99"}), 422, "unknown_class"),
        ("unknown class code", raw(png, **{"class": "wart"}), 422, "unknown_class"),
        ("path in class", raw(png, **{"class": "../../x"}), 422, "unknown_class"),
        ("path in method", raw(png, method="../../x"), 422, "unknown_method"),
        ("CMYK JPEG", raw(encode(lesion.convert("CMYK"), "JPEG"), "image/jpeg"), 200, None),
        ("16-bit PNG", raw(sixteen), 200, None),
        ("palette PNG", raw(encode(lesion.convert("P"), "PNG")), 200, None),
        ("grayscale PNG", raw(encode(lesion.convert("L"), "PNG")), 200, None),
        ("RGBA PNG", raw(encode(lesion.convert("RGBA"), "PNG")), 200, None),
        ("EXIF-rotated JPEG", raw(exif_rotated(lesion), "image/jpeg"), 200, None),
        ("JPEG/ZIP polyglot", raw(polyglot(jpeg), "image/jpeg"), 200, None),
        ("WebP", raw(webp, "image/webp"), 200, None),
    ]


def bucket_objects(storage_url: str, bucket: str) -> set[str]:
    with urllib.request.urlopen(f"{storage_url}/storage/v1/b/{bucket}/o", timeout=10) as r:  # noqa: S310
        return {item["name"] for item in json.load(r).get("items", [])}


@pytest.fixture(scope="module")
def tiered_gradcam(stack, tmp_path_factory):
    """gradcam in a 256 MiB cgroup (where the controller is available) with its own bucket."""
    bucket = "hardening"
    storage.create_bucket(stack.storage_url, bucket)
    log = open(tmp_path_factory.mktemp("hardening") / "gradcam.log", "ab")
    server = servers.start_function(
        "gradcam",
        env=servers.function_env(stack.storage_url, bucket),
        log=log,
        memory_mb=TIER_MB if memgroup.available() else None,
    )
    server.wait_up(60)
    requests.get(server.url, params={"warmup": "1"}, timeout=60)  # storage ready, as kept warm
    yield server.url, server.memory, bucket
    server.stop()
    log.close()


def test_hostile_corpus(tiered_gradcam, stack, lesion_rgb):
    url, group, bucket = tiered_gradcam
    cases = corpus(lesion_rgb)
    assert len(cases) >= 25
    before = bucket_objects(stack.storage_url, bucket)
    accepted = set()
    for name, request, status, code in cases:
        response = requests.post(url, timeout=60, **request)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        body = response.json()
        assert "Traceback" not in response.text, name
        if code:
            assert body["error"]["code"] == code, name
        else:
            assert body["heatmap"]["stored"] is True, name
            accepted.add(body["image"]["sha256"])
        if name == "EXIF-rotated JPEG":
            assert (body["image"]["width"], body["image"]["height"]) == (120, 160)
    warm = requests.get(url, params={"warmup": "1"}, timeout=30)
    assert warm.status_code == 200, "the server did not survive the corpus"
    written = bucket_objects(stack.storage_url, bucket) - before
    assert written and all(
        key.rsplit("/", 1)[1].removesuffix(".png") in accepted for key in written
    ), "a rejected request wrote to the bucket"
    print(f"corpus: {len(cases)} kinds, {len(accepted)} accepted, {len(written)} objects written")
    if group is not None:
        print(f"corpus: peak {group.peak_mb():.0f} MiB of {TIER_MB}, OOM kills {group.oom_kills()}")
        assert group.oom_kills() == 0 and group.peak_mb() <= TIER_MB
        assert warm.json()["memory"]["limit_mb"] == TIER_MB


def test_eight_clients_get_their_own_answers(stack, demo_model_dir):
    """8 clients × 50 distinct images at once against one gradcam server (8 threads)."""
    from dermcam import cam, imaging
    from dermcam.engine import LiteRTEngine
    from model_store.synthetic import dataset

    images, _, _ = dataset(seed=909, count=400, size=96)
    uploads = [encode(Image.fromarray(img), "PNG") for img in images]
    engine = LiteRTEngine(str(demo_model_dir), artifacts=("gradcam",))
    failures, answers = [], {}
    lock = threading.Lock()

    def client(k: int) -> None:
        session = requests.Session()
        for i in range(k * 50, (k + 1) * 50):
            try:
                response = session.post(
                    stack.gradcam_url,
                    data=uploads[i],
                    timeout=60,
                    params={"class": str(i % 7)},
                    headers={"Content-Type": "image/png"},
                )
                body = response.json()
            except (requests.RequestException, ValueError) as exc:
                with lock:
                    failures.append((i, repr(exc)))
                continue
            with lock:
                if response.status_code != 200:
                    failures.append((i, response.status_code))
                answers[i] = body

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    print(f"concurrency: 400 requests from 8 clients in {elapsed:.1f} s")
    assert failures == []
    assert len(answers) == 400, elapsed
    for i, body in answers.items():
        assert body["image"]["sha256"] == sha(uploads[i])
        assert body["heatmap"]["object"].endswith(f"/{i % 7}/{sha(uploads[i])}.png")
    for i in range(0, 400, 23):  # the map is this image's own, not a neighbour's
        decoded = imaging.decode(uploads[i], 50_000_000)
        tensor = imaging.to_tensor(decoded.image, 128, 128)
        ex = engine.explain(tensor, i % 7)
        expected = cam.class_map(ex.activations, ex.gradients)
        assert np.abs(np.asarray(answers[i]["heatmap"]["grid"]) - expected).max() < 1e-3
    memory = requests.get(stack.gradcam_url, params={"warmup": "1"}, timeout=30).json()["memory"]
    print(f"concurrency: worker peak RSS {memory['peak_mb']} MB")
    assert memory["peak_mb"] < 400
