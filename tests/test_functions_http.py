"""Both functions as real functions-framework servers over HTTP, storage in fake-gcs-server."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
import requests
from PIL import Image

from conftest import encode, fetch_png, post_multipart

CODES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def check_prediction_body(body, data_sha=None):
    assert body["model"] == {
        "name": "demo",
        "version": "1",
        "demo": True,
        "probabilities": "exclusive",
        "calibrated": True,
    }
    # the committed demo carries a trust block: served probabilities are calibrated, the raw
    # ones beside them, a decision at its operating points and a prediction set
    assert body["calibrated"] is True and body["trust"]["temperature"] > 0
    assert all(0 <= p["raw_probability"] <= 1 for p in body["predictions"])
    assert isinstance(body["decision"]["refer"], bool)
    assert body["prediction_set"]["classes"][0] == body["top"]["code"]
    assert body["prediction_set"]["coverage"] == 0.9
    probs = [p["probability"] for p in body["predictions"]]
    assert probs == sorted(probs, reverse=True)
    assert sorted(p["code"] for p in body["predictions"]) == CODES
    assert abs(sum(probs) - 1) < 1e-4
    assert body["top"] == body["predictions"][0]
    assert all(p["name"] for p in body["predictions"])
    if data_sha:
        assert body["image"]["sha256"] == data_sha
    assert body["timing_ms"]["total_ms"] > 0


def sha(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- predict ---------------------------------------------------------------------------


def test_predict_multipart(stack, lesion_png):
    response = post_multipart(stack.predict_url, lesion_png)
    assert response.status_code == 200, response.text
    body = response.json()
    check_prediction_body(body, sha(lesion_png))
    assert body["image"]["width"] == 128 and body["image"]["format"] == "png"
    assert body["top"]["code"] == "mel"  # the fixture draws a melanoma-like lesion


def test_predict_raw_body_and_json_agree(stack, lesion_png):
    raw = requests.post(
        stack.predict_url, data=lesion_png, headers={"Content-Type": "image/png"}, timeout=60
    ).json()
    as_json = requests.post(
        stack.predict_url, timeout=60, json={"image": base64.b64encode(lesion_png).decode()}
    ).json()
    check_prediction_body(raw, sha(lesion_png))
    assert raw["predictions"] == as_json["predictions"]


def test_predict_large_jpeg_photo(stack, photo_jpeg):
    response = requests.post(
        stack.predict_url, data=photo_jpeg, headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert (response.json()["image"]["width"], response.json()["image"]["height"]) == (4000, 3000)


# --- gradcam ---------------------------------------------------------------------------


def test_gradcam_default_class_stores_a_heatmap_and_caches_it(stack, lesion_rgb):
    data = encode(lesion_rgb.rotate(90), "PNG")  # an image no other test uses
    first = post_multipart(stack.gradcam_url, data)
    assert first.status_code == 200, first.text
    body = first.json()
    check_prediction_body(body, sha(data))
    assert body["target"]["code"] == body["top"]["code"] and body["method"] == "gradcam"
    heatmap = body["heatmap"]
    assert heatmap["stored"] is True and heatmap["cached"] is False
    assert heatmap["object"].startswith("gs://dermcam-heatmaps/heatmaps/demo/1/gradcam/")
    assert heatmap["object"].endswith(f"/{body['target']['index']}/{sha(data)}.png")
    assert "X-Goog-Signature" in heatmap["url"] and heatmap["expires_at"]
    picture = fetch_png(heatmap["url"])
    assert picture.format == "PNG" and picture.has_transparency_data
    assert picture.size == (heatmap["width"], heatmap["height"]) == (128, 128)
    grid = heatmap["grid"]
    assert (len(grid), len(grid[0])) == (16, 16)
    assert max(max(row) for row in grid) == 1.0 and min(min(row) for row in grid) >= 0.0
    assert heatmap["empty"] is False
    assert all(round(value, 4) == value for row in grid for value in row)  # 4 decimals, no noise

    again = post_multipart(stack.gradcam_url, data).json()
    assert again["heatmap"]["cached"] is True and again["heatmap"]["stored"] is True
    assert again["heatmap"]["object"] == heatmap["object"]
    assert again["heatmap"]["grid"] == grid and again["heatmap"]["empty"] is False
    assert again["predictions"] == body["predictions"]
    assert fetch_png(again["heatmap"]["url"]).size == (128, 128)


def test_a_cold_instance_answers_inline_then_stores(single_function, lesion_png, lesion_rgb):
    """The first heatmap on a new instance comes inline, and is stored after the answer; a
    warmup readies storage before any photo."""
    url, _ = single_function("gradcam")
    first = post_multipart(url, lesion_png).json()["heatmap"]
    assert first["stored"] is False and first["url"].startswith("data:image/png;base64,")
    assert fetch_png(first["url"]).size == (128, 128)
    for _ in range(50):  # stored moments after the answer, on a thread of its own
        again = post_multipart(url, lesion_png).json()["heatmap"]
        if again["cached"]:
            break
        time.sleep(0.1)
    assert again["cached"] and again["stored"] and "X-Goog-Signature" in again["url"]

    warmed, _ = single_function("gradcam")
    assert requests.get(warmed, params={"warmup": "1"}, timeout=60).status_code == 200
    other = encode(lesion_rgb.rotate(180), "PNG")
    assert post_multipart(warmed, other).json()["heatmap"]["stored"] is True


def test_gradcam_class_by_code_index_and_method(stack, lesion_png):
    by_code = post_multipart(stack.gradcam_url, lesion_png, **{"class": "nv"}).json()
    assert by_code["target"] == {**by_code["target"], "index": 5, "code": "nv"}
    by_index = requests.post(
        stack.gradcam_url,
        timeout=60,
        json={"image": base64.b64encode(lesion_png).decode(), "class": 5, "method": "gradcam++"},
    ).json()
    assert by_index["target"]["code"] == "nv" and by_index["method"] == "gradcam++"
    assert "/gradcampp/5/" in by_index["heatmap"]["object"]
    assert by_index["heatmap"]["object"] != by_code["heatmap"]["object"]
    query = requests.post(
        f"{stack.gradcam_url}?class=bcc&method=gradcam",
        data=lesion_png,
        headers={"Content-Type": "image/png"},
        timeout=60,
    ).json()
    assert query["target"]["code"] == "bcc"


def test_heatmap_keeps_the_uploads_aspect_ratio(stack, photo_jpeg):
    body = requests.post(
        stack.gradcam_url, data=photo_jpeg, headers={"Content-Type": "image/jpeg"}, timeout=60
    ).json()
    assert (body["heatmap"]["width"], body["heatmap"]["height"]) == (512, 384)
    assert fetch_png(body["heatmap"]["url"]).size == (512, 384)


def test_composite_on_request(stack, lesion_png):
    body = post_multipart(stack.gradcam_url, lesion_png, composite="1").json()
    composite = body["heatmap"]["composite"]
    assert composite["stored"] is True and composite["object"].endswith(".composite.jpg")
    picture = Image.open(io.BytesIO(requests.get(composite["url"], timeout=10).content))
    assert picture.format == "JPEG" and picture.size == (128, 128)


# --- warmup, lazy loading, memory report -------------------------------------------------


def test_warmup_reports_model_and_memory(stack):
    for url in (stack.predict_url, stack.gradcam_url):
        body = requests.get(url, params={"warmup": "1"}, timeout=60).json()
        assert body["status"] == "warm" and body["model"]["demo"] is True
        assert body["load_ms"] > 0 and body["inference_ms"] >= 0
        memory = body["memory"]
        assert 10 < memory["rss_mb"] <= memory["peak_mb"] < 1024
        assert "limit_mb" in memory


def test_model_loads_lazily_and_once(single_function, lesion_png):
    url, _ = single_function("predict", with_storage=False)
    first = requests.get(url, params={"warmup": "1"}, timeout=60).json()
    assert first["already_loaded"] is False  # nothing was loaded at import
    for _ in range(20):
        assert post_multipart(url, lesion_png).status_code == 200
    last = requests.get(url, params={"warmup": "true"}, timeout=60).json()
    assert last["already_loaded"] is True and last["model_loads"] == 1


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["predict", "gradcam"])
@pytest.mark.parametrize(
    "send, status, code",
    [
        (
            lambda u: requests.post(u, data=b"not an image", headers={"Content-Type": "image/png"}),
            400,
            "invalid_image",
        ),
        (lambda u: requests.post(u, json={"image": "@@not base64@@"}), 400, "bad_request"),
        (lambda u: requests.post(u, json={"picture": "x"}), 400, "bad_request"),
        (
            lambda u: requests.post(u, data=b"{", headers={"Content-Type": "application/json"}),
            400,
            "bad_request",
        ),
        (lambda u: requests.post(u, files={"photo": ("a.png", b"x")}), 400, "bad_request"),
        (lambda u: requests.put(u, data=b"x"), 405, "method_not_allowed"),
        (lambda u: requests.get(u), 405, "method_not_allowed"),
        (
            lambda u: requests.post(
                u, data=b"x" * (10 * 1024 * 1024 + 10), headers={"Content-Type": "image/jpeg"}
            ),
            413,
            "payload_too_large",
        ),
        (
            lambda u: requests.post(u, data=b"hello", headers={"Content-Type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (
            lambda u: requests.post(
                u,
                data=encode(Image.new("RGB", (20, 20)), "GIF"),
                headers={"Content-Type": "image/png"},
            ),
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_bad_requests_get_json_errors(stack, function, send, status, code):
    response = send(getattr(stack, f"{function}_url"))
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"class": "xyz"}, "unknown_class"),
        ({"class": "7"}, "unknown_class"),
        ({"class": "../../x"}, "unknown_class"),
        ({"method": "../../x"}, "unknown_method"),
        ({"method": "scorecam"}, "unknown_method"),
    ],
)
def test_unknown_class_or_method_is_422(stack, lesion_png, fields, code):
    response = post_multipart(stack.gradcam_url, lesion_png, **fields)
    assert response.status_code == 422 and response.json()["error"]["code"] == code


# --- CORS ------------------------------------------------------------------------------------


def test_cors_allowed_and_refused(single_function, lesion_png):
    url, _ = single_function(
        "predict", env={"DERMCAM_ALLOWED_ORIGINS": "https://page.example"}, with_storage=False
    )
    allowed = requests.options(
        url,
        headers={"Origin": "https://page.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://page.example"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert allowed.headers["Access-Control-Max-Age"]
    answer = requests.post(
        url,
        files={"image": ("a.png", lesion_png)},
        headers={"Origin": "https://page.example"},
        timeout=30,
    )
    assert answer.headers["Access-Control-Allow-Origin"] == "https://page.example"
    error = requests.post(
        url,
        data=b"x",
        headers={"Origin": "https://page.example", "Content-Type": "text/plain"},
        timeout=10,
    )
    assert error.headers["Access-Control-Allow-Origin"] == "https://page.example"
    refused = requests.options(url, headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in refused.headers
    other = requests.post(
        url,
        files={"image": ("a.png", lesion_png)},
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert "Access-Control-Allow-Origin" not in other.headers


# --- storage faults --------------------------------------------------------------------------


# --- logs ----------------------------------------------------------------------------------


def test_one_structured_log_line_per_request_without_image_bytes(stack, lesion_png):
    before = stack.log("predict")
    post_multipart(stack.predict_url, lesion_png)
    requests.post(
        stack.predict_url, json={"image": base64.b64encode(lesion_png).decode()}, timeout=30
    )
    time.sleep(0.3)
    new = stack.log("predict")[len(before) :]
    records = [json.loads(line) for line in new.splitlines() if line.startswith("{")]
    assert len(records) == 2
    for record in records:
        assert record["severity"] == "INFO" and record["function"] == "predict"
        assert record["status"] == 200 and record["model_version"] == "1"
        assert record["latency_ms"] > 0 and record["rss_mb"] > 0 and record["peak_mb"] > 0
        assert record["image"] == sha(lesion_png)[:12]
    encoded = base64.b64encode(lesion_png).decode()
    everything = stack.log("predict") + stack.log("gradcam")
    assert encoded[:40] not in everything and encoded[-40:] not in everything


def test_signed_urls_expire_after_the_configured_ttl(stack, lesion_png):
    import datetime as dt
    from urllib.parse import parse_qs, urlparse

    body = post_multipart(stack.gradcam_url, lesion_png, **{"class": "bkl"}).json()
    query = parse_qs(urlparse(body["heatmap"]["url"]).query)
    assert query["X-Goog-Expires"] == ["900"] and query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    expires = dt.datetime.fromisoformat(body["heatmap"]["expires_at"])
    left = (expires - dt.datetime.now(dt.UTC)).total_seconds()
    assert 880 < left <= 900


@pytest.mark.parametrize(
    "method",
    ["xgradcam", "hirescam", "gradcam-elementwise", "layercam", "eigencam", "eigengradcam"],
)
def test_every_cam_method_is_served_and_stored_apart(stack, lesion_png, method):
    body = post_multipart(stack.gradcam_url, lesion_png, method=method, **{"class": "mel"}).json()
    assert body["method"] == method and body["heatmap"]["stored"] is True
    assert f"/{method}/4/" in body["heatmap"]["object"]
    assert max(max(row) for row in body["heatmap"]["grid"]) == 1.0
