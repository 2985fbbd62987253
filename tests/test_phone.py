"""The page on a phone over an emulated mobile uplink (Chromium's DevTools network shaping):
one small upload per photo, upright, with no EXIF; progress shown; the answer the same as for
the original file. Times are printed here and measured against the old page by bench.phone."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps
from test_browser import OUTPUT, overlay_loaded

from bench.phone import LINKS, PHONE, capture, config_route, emulate, phone_photo, time_photo

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return phone_photo()


@pytest.fixture
def phone(browser, stack, tmp_path, photo_bytes):
    """(page, proxy, photo path): the page at phone width, every upload captured."""
    path = tmp_path / "IMG_2041.jpg"
    path.write_bytes(photo_bytes)
    with capture({"predict": stack.predict_url, "gradcam": stack.gradcam_url}) as proxy:
        context = browser.new_context(viewport=PHONE, has_touch=True)
        page = context.new_page()
        config_route(page, f"{proxy.url}/predict", f"{proxy.url}/gradcam")
        page.goto(stack.page_url + "/")
        page.evaluate(
            """() => { window.statusSeen = [];
                new MutationObserver(() => window.statusSeen.push(
                    document.getElementById('status').textContent))
                  .observe(document.getElementById('status'),
                           {childList: true, characterData: true, subtree: true}); }"""
        )
        yield page, proxy, path
        context.close()


@pytest.mark.parametrize("link", list(LINKS))
def test_one_small_upright_upload_without_exif(phone, photo_bytes, link):
    page, proxy, path = phone
    emulate(page, link)
    times = time_photo(page, path)
    print(
        f"\n{link} link {LINKS[link]}: {times}, uploaded {proxy.uploads[0].bytes} bytes "
        f"of a {len(photo_bytes)}-byte photo"
    )
    assert [u.path for u in proxy.uploads] == ["gradcam"], "one upload per photo"
    upload = proxy.uploads[0]
    assert upload.bytes <= 0.05 * len(photo_bytes)

    received = Image.open(io.BytesIO(upload.image))
    assert received.format == "JPEG" and max(received.size) == 1024
    assert not received.getexif(), "EXIF (and the GPS position in it) left the device"
    assert b"Exif\x00\x00" not in upload.image and b"PhoneMaker" not in upload.image
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(photo_bytes)))
    assert received.size[0] < received.size[1] == 1024  # portrait, as the phone showed it
    expected = np.asarray(upright.resize(received.size, Image.Resampling.BILINEAR), np.float32)
    assert np.abs(np.asarray(received, np.float32) - expected).mean() < 6

    # Another class: the small prepared copy again, never the original megabytes.
    first = page.eval_on_selector("#overlay", "o => o.src")
    page.locator("#predictions li").nth(2).locator("button").click()
    page.wait_for_function(
        "src => document.getElementById('overlay').src !== src", arg=first, timeout=120_000
    )
    overlay_loaded(page)
    assert len(proxy.uploads) == 2 and proxy.uploads[1].bytes <= 0.05 * len(photo_bytes)
    page.screenshot(path=str(OUTPUT / f"phone-{link}.png"), full_page=True)


def test_progress_and_the_cold_start_note(phone):
    page, proxy, path = phone
    emulate(page, "mobile")
    proxy.delay_s = 5.0  # the function takes as long as a cold instance
    time_photo(page, path)
    seen = page.evaluate("() => window.statusSeen")
    assert any(s.startswith("Uploading the photo… ") and s.endswith(" %") for s in seen)
    assert "Classifying and explaining…" in seen
    assert any("starting up" in s for s in seen), seen


def test_the_prepared_copy_answers_as_the_original_does(phone, stack, photo_bytes):
    """Same top class, and the map within r 0.95 of the one for the full-size upload."""
    page, proxy, path = phone
    time_photo(page, path)
    prepared = proxy.uploads[0].image

    def explain(data: bytes) -> dict:
        answer = requests.post(
            stack.gradcam_url, data=data, headers={"Content-Type": "image/jpeg"}, timeout=60
        )
        assert answer.status_code == 200
        return answer.json()

    original, small = explain(photo_bytes), explain(prepared)
    assert original["top"]["code"] == small["top"]["code"]
    a = np.asarray(original["heatmap"]["grid"]).ravel()
    b = np.asarray(small["heatmap"]["grid"]).ravel()
    assert np.corrcoef(a, b)[0, 1] >= 0.95
    p = {x["code"]: x["probability"] for x in original["predictions"]}
    q = {x["code"]: x["probability"] for x in small["predictions"]}
    assert max(abs(p[c] - q[c]) for c in p) < 0.05
