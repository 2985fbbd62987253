"""The page in headless Chromium (Debian's) against the local stack: the user's path."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, encode

pytestmark = pytest.mark.browser
OUTPUT = ROOT / "test-output" / "browser"


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(stack.page_url + "/")
    yield page
    context.close()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def overlay_loaded(page) -> int:
    page.wait_for_function(
        "() => { const o = document.getElementById('overlay');"
        " return !o.hidden && o.complete && o.naturalWidth > 0; }",
        timeout=30_000,
    )
    return page.eval_on_selector("#overlay", "o => o.naturalWidth")


def test_the_decision_comes_first_and_a_dark_photo_is_declined(page, lesion_rgb, tmp_path):
    """The calibrated demo: the referral decision above the ranking, in words that never say
    benign, the prediction set as "One of" or "Most likely", then the ranking; a photo too
    dark to read gets the reason and what to do, and no ranking or map (the cat: the
    HAM10000 page test)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    photo = write(tmp_path, "lesion.jpg", encode(lesion_rgb.resize((600, 450)), "JPEG"))
    page.set_input_files("#file-input", str(photo))
    page.locator("#predictions li").first.wait_for(timeout=30_000)
    decision = page.locator("#verdict .decision")
    assert decision.is_visible()
    words = decision.inner_text()
    assert words.startswith(("Refer", "Not flagged"))
    assert "benign" not in words.lower() and "nothing to worry" not in words.lower()
    assert (
        page.locator("#verdict .prediction-set")
        .inner_text()
        .startswith(("One of:", "Most likely:"))
    )
    assert "calibrated" in page.locator("#verdict .calibration").inner_text()
    order = page.eval_on_selector_all("#verdict, #predictions", "nodes => nodes.map(n => n.id)")
    assert order == ["verdict", "predictions"]  # document order: the decision first
    page.screenshot(path=str(OUTPUT / "decision-first.png"), full_page=True)

    from PIL import ImageEnhance

    dark = ImageEnhance.Brightness(lesion_rgb.resize((600, 450))).enhance(0.12)
    page.set_input_files("#file-input", str(write(tmp_path, "dark.jpg", encode(dark, "JPEG"))))
    page.wait_for_function(
        "() => document.getElementById('error').dataset.abstain === 'too dark'",
        timeout=30_000,
    )
    assert "better light" in page.locator("#error-message").inner_text()
    assert page.locator("#retry").is_hidden()
    assert page.locator("#predictions li").count() == 0
    assert page.locator("#verdict").is_hidden() and page.locator("#overlay").is_hidden()
    page.screenshot(path=str(OUTPUT / "declined-dark.png"), full_page=True)
    # Chromium logs every 4xx resource; the decline is one, anything else is a fault
    declined = "the server responded with a status of 422"
    assert [e for e in page.console_errors if declined not in e] == []


def test_upload_predict_explain_switch_class_and_recover(page, stack, lesion_rgb, tmp_path):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    photo = write(tmp_path, "lesion.jpg", encode(lesion_rgb.resize((600, 450)), "JPEG"))
    page.set_input_files("#file-input", str(photo))

    rows = page.locator("#predictions li")
    rows.first.wait_for(timeout=30_000)
    assert rows.count() == 7
    assert page.locator("#predictions li .code").count() == 7  # "Melanoma mel": names differ
    values = [
        float(v)
        for v in page.eval_on_selector_all(
            "#predictions [data-probability]", "rows => rows.map(r => r.dataset.probability)"
        )
    ]
    assert values == sorted(values, reverse=True)
    assert page.locator("#predictions li.top").count() == 1
    assert page.locator("#demo-banner").is_visible()
    assert page.locator(".disclaimer").is_visible()
    assert "demo" in page.locator("#model-info").inner_text()

    assert overlay_loaded(page) == 512  # long side 512, from the storage emulator
    first_src = page.eval_on_selector("#overlay", "o => o.src")
    assert first_src.startswith(stack.storage_url)
    assert page.locator("#predictions li.top button").get_attribute("aria-pressed") == "true"
    page.screenshot(path=str(OUTPUT / "explained-top-class.png"), full_page=True)

    second = page.locator("#predictions li").nth(3).locator("button")
    second_code = second.get_attribute("data-code")
    second.click()
    page.wait_for_function(
        "src => document.getElementById('overlay').src !== src", arg=first_src, timeout=30_000
    )
    assert overlay_loaded(page) == 512
    assert page.locator(f"button[data-code={second_code}]").get_attribute("aria-pressed") == "true"
    assert page.locator("#predictions button[aria-pressed=true]").count() == 1

    page.check("input[value='gradcam++']")
    page.wait_for_function(
        "() => document.getElementById('overlay').src.includes('gradcampp')", timeout=30_000
    )
    page.fill("#opacity", "30")
    assert page.eval_on_selector("#overlay", "o => o.style.opacity") == "0.3"
    page.screenshot(path=str(OUTPUT / "explained-other-class.png"), full_page=True)
    assert page.console_errors == []

    # A text file dressed up as an image: the server's JSON error is shown, nothing breaks.
    page.set_input_files("#file-input", str(write(tmp_path, "notes.png", b"just some text")))
    page.locator("#error").wait_for(state="visible", timeout=30_000)
    assert "not a JPEG, PNG or WebP" in page.locator("#error-message").inner_text()
    page.screenshot(path=str(OUTPUT / "error.png"), full_page=True)
    unexpected = [e for e in page.console_errors if "Failed to load resource" not in e]
    assert unexpected == []

    page.set_input_files("#file-input", str(photo))
    page.locator("#error").wait_for(state="hidden", timeout=30_000)
    rows.first.wait_for(timeout=30_000)
    assert overlay_loaded(page) == 512


def test_phone_width_and_keyboard(page, lesion_rgb, tmp_path):
    page.set_viewport_size({"width": 360, "height": 780})
    page.set_input_files("#file-input", str(write(tmp_path, "a.png", encode(lesion_rgb, "PNG"))))
    overlay_loaded(page)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways on a phone ({width}px)"
    page.screenshot(path=str(OUTPUT / "phone.png"), full_page=True)
    # Every class button is reachable and works from the keyboard.
    button = page.locator("#predictions li").nth(1).locator("button")
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#predictions li:nth-child(2) button')"
        ".getAttribute('aria-pressed') === 'true'",
        timeout=30_000,
    )
    overlay_loaded(page)
    assert page.console_errors == []


def test_predict_only_mode_without_gradcam_url(browser, stack, lesion_rgb, tmp_path):
    context = browser.new_context()
    page = context.new_page()
    page.route(
        "**/config.js",
        lambda route: route.fulfill(
            content_type="text/javascript",
            body=f'window.DERMCAM_CONFIG = {{predictUrl: "{stack.predict_url}", gradcamUrl: ""}};',
        ),
    )
    page.goto(stack.page_url + "/")
    assert page.locator("#predict-only").is_visible()
    page.set_input_files("#file-input", str(write(tmp_path, "a.png", encode(lesion_rgb, "PNG"))))
    page.locator("#predictions li").first.wait_for(timeout=30_000)
    assert page.locator("#predictions button").count() == 0
    assert page.locator("#overlay").is_hidden()
    context.close()


@pytest.mark.parametrize("gesture", ["drop", "paste"])
def test_drag_and_drop_and_paste(page, lesion_rgb, gesture):
    import base64

    data = base64.b64encode(encode(lesion_rgb, "PNG")).decode()
    page.evaluate(
        """([data, gesture]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "lesion.png", {type: "image/png"}));
            const event = gesture === "drop"
              ? new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true})
              : new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true});
            const target = gesture === "drop" ? document.getElementById("dropzone") : document;
            target.dispatchEvent(event);
        }""",
        [data, gesture],
    )
    page.locator("#predictions li").first.wait_for(timeout=30_000)
    assert overlay_loaded(page) == 128
    assert page.console_errors == []


@pytest.fixture(scope="module")
def metadata_stack(tmp_path_factory):
    """The stack serving the metadata demo model (image + age, sex, site)."""
    from test_metadata_http import ENV

    from devstack import stack as devstack

    running = devstack.start(log_dir=tmp_path_factory.mktemp("metadata-logs"), env=ENV)
    yield running
    running.stop()


def test_patient_form_from_the_model_description(browser, metadata_stack, tmp_path):
    from PIL import Image

    from model_store.synthetic import lesion_image

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(metadata_stack.page_url + "/")
    page.locator("#patient").wait_for(state="visible", timeout=30_000)
    assert page.locator("#patient select[name=sex]").input_value() == "unknown"
    assert page.eval_on_selector_all(
        "#patient select[name=site] option", "options => options.map(o => o.value)"
    ) == ["arm", "head-or-neck", "leg-or-genital", "trunk", "unknown"]
    age = page.locator("#patient input[name=age]")
    assert age.get_attribute("min") == "0" and age.get_attribute("max") == "120"
    page.select_option("#patient select[name=site]", "trunk")
    age.fill("80")

    pixels, _ = lesion_image(seed=9, index=3, size=200, label=5)
    photo = tmp_path / "nevus.png"
    Image.fromarray(pixels).save(photo)
    with page.expect_response(lambda r: r.request.method == "POST", timeout=30_000) as info:
        page.set_input_files("#file-input", str(photo))
    answer = info.value.json()
    assert answer["metadata"]["age"] == {"value": 80.0, "used": 80.0, "defaulted": False}
    assert answer["metadata"]["site"]["used"] == "trunk"
    overlay_loaded(page)
    # an uncalibrated model says so, and gives no decision
    assert "not calibrated" in page.locator("#verdict .calibration").inner_text()
    assert page.locator("#verdict .decision").count() == 0
    page.screenshot(path=str(OUTPUT / "metadata-form.png"), full_page=True)

    with page.expect_response(lambda r: r.request.method == "POST", timeout=30_000) as info:
        age.fill("30")
        age.press("Tab")  # a change re-runs the analysis with the new value
    # "value" is what the request carried; "used" what the model got
    assert info.value.json()["metadata"]["age"] == {
        "value": 30.0,
        "used": 30.0,
        "defaulted": False,
    }
    overlay_loaded(page)

    age.fill("130")
    age.press("Tab")
    page.locator("#error").wait_for(state="visible", timeout=30_000)
    assert "'age' must be a number between 0 and 120" in page.locator("#error-message").inner_text()
    context.close()
