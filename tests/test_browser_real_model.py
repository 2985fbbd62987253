"""The page serving the real HAM10000 model, as a newcomer sees it after `make run
MODEL=ham10000`: what the model is, its form, and the file's own pixels sent to it."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import ISIC_IMAGES, ROOT, encode

pytestmark = pytest.mark.browser
OUTPUT = ROOT / "test-output" / "browser"


@pytest.fixture(scope="module")
def ham_stack(tmp_path_factory):
    from devstack import stack as devstack
    from model_store import catalog

    model_dir = catalog.ensure("ham10000")
    running = devstack.start(
        log_dir=tmp_path_factory.mktemp("ham-logs"), env={"DERMCAM_MODEL_DIR": str(model_dir)}
    )
    yield running
    running.stop()


@pytest.fixture
def page(browser, ham_stack):
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    page.console_errors = []
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    page.goto(ham_stack.page_url + "/")
    page.locator("#model-card").wait_for(state="visible", timeout=60_000)
    yield page
    context.close()


def prepared(page, data: bytes, name: str) -> tuple[bytes, dict]:
    """What the page's photo.js makes of a file before upload: (bytes, facts)."""
    found = page.evaluate(
        """async ([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const photo = await window.DermcamPhoto.prepare(new File([bytes], name));
            const out = new Uint8Array(await photo.blob.arrayBuffer());
            let text = "";
            for (const b of out) text += String.fromCharCode(b);
            return [btoa(text), { own: !!photo.own, width: photo.width, height: photo.height }];
        }""",
        [base64.b64encode(data).decode(), name],
    )
    return base64.b64decode(found[0]), found[1]


def test_the_page_says_what_the_model_is_and_asks_its_own_fields(page, ham_stack, tmp_path):
    card = page.locator("#model-card").inner_text()
    assert "HAM10000" in card and "CC BY-NC 4.0" in card and "MIT" in card
    assert "research and non-commercial use" in card
    assert page.locator("#demo-banner").is_hidden() and page.locator(".disclaimer").is_visible()
    page.locator("#model-card summary").click()
    classes = page.locator("#card-classes").inner_text()
    assert "Melanoma (malignant)" in classes and "Benign mole" in classes
    fields = page.eval_on_selector_all("#patient [data-field]", "f => f.map(x => x.name)")
    assert fields == ["sex", "location", "age"]

    photo = ISIC_IMAGES / "ISIC_0000157.jpg"  # a melanoma, a man of 60
    page.select_option("#patient select[name=sex]", "male")
    page.locator("#patient input[name=age]").fill("60")
    with page.expect_response(lambda r: r.request.method == "POST", timeout=60_000) as got:
        page.set_input_files("#file-input", str(photo))
    shown = got.value.json()
    # A 250-px dermoscopy image goes as the file's own bytes: the model sees its pixels.
    assert shown["image"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    direct = requests.post(
        ham_stack.predict_url,
        files={"image": ("x.jpg", photo.read_bytes())},
        data={"sex": "male", "age": "60"},
        timeout=60,
    ).json()
    assert shown["predictions"] == direct["predictions"]
    page.locator("#predictions li").first.wait_for(timeout=60_000)
    page.screenshot(path=str(OUTPUT / "ham10000.png"), full_page=True)
    assert page.console_errors == []


def test_a_decision_for_the_lesion_and_no_diagnosis_for_the_cat(page):
    """The issue's case on the real model: the melanoma photo gets its referral decision above
    the ranking and a set; scikit-image's cat gets no ranking and no map, only the reason."""
    skimage = pytest.importorskip("skimage")
    page.set_input_files("#file-input", str(ISIC_IMAGES / "ISIC_0000157.jpg"))
    page.locator("#verdict .decision").wait_for(timeout=60_000)
    assert page.locator("#verdict .decision").inner_text().startswith(("Refer", "Not flagged"))
    assert (
        page.locator("#verdict .prediction-set")
        .inner_text()
        .startswith(("One of:", "Most likely:"))
    )
    cat = Path(skimage.__file__).parent / "data" / "chelsea.png"
    page.set_input_files("#file-input", str(cat))
    page.wait_for_function(
        "() => document.getElementById('error').dataset.abstain === 'not a skin lesion'",
        timeout=60_000,
    )
    assert "does not look like a skin lesion" in page.locator("#error-message").inner_text()
    assert page.locator("#predictions li").count() == 0 and page.locator("#overlay").is_hidden()
    page.screenshot(path=str(OUTPUT / "ham10000-cat-declined.png"), full_page=True)
    assert page.console_errors == []


def test_a_blank_map_is_called_blank_and_another_method_offered(page):
    photo = ISIC_IMAGES / "ISIC_0000194.jpg"  # a nevus whose Grad-CAM is negative everywhere
    with page.expect_response(lambda r: r.request.method == "POST", timeout=60_000) as got:
        page.set_input_files("#file-input", str(photo))
    assert got.value.json()["heatmap"]["empty"] is True
    caption = page.locator("#viewer-caption")
    caption.filter(has_text="blank").wait_for(timeout=60_000)
    assert "found no region that raised the score of" in caption.inner_text()
    assert "Grad-CAM++ or LayerCAM" in caption.inner_text()
    assert "warm colours" not in caption.inner_text()
    page.screenshot(path=str(OUTPUT / "ham10000-blank-map.png"), full_page=True)
    assert page.console_errors == []


def test_metadata_is_cut_out_and_turned_photos_are_reencoded(page, lesion_rgb):
    exif = Image.Exif()
    exif[0x8298] = "Clinic copyright"  # any EXIF block: the page must not send it
    plain = encode(lesion_rgb, "JPEG", quality=92, exif=exif.tobytes())
    own, facts = prepared(page, plain, "plain.jpg")
    assert facts["own"] and b"Exif" not in own and len(own) < len(plain)
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(own))), np.asarray(Image.open(io.BytesIO(plain)))
    )  # the same pixels, not a re-encoded copy

    png = encode(lesion_rgb, "PNG", pnginfo=_text_chunk("Patient", "Jane Doe"))
    own, facts = prepared(page, png, "lesion.png")
    assert facts["own"] and b"Jane Doe" not in own
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(own))), np.asarray(lesion_rgb))

    exif[0x0112] = 6  # turned: the EXIF says rotate 90°
    turned = encode(lesion_rgb.resize((160, 120)), "JPEG", exif=exif.tobytes())
    sent, facts = prepared(page, turned, "turned.jpg")
    assert not facts["own"] and b"Exif" not in sent
    assert Image.open(io.BytesIO(sent)).size == (120, 160)  # upright, re-encoded

    large = encode(lesion_rgb.resize((2000, 1500)), "JPEG", quality=90)
    sent, facts = prepared(page, large, "large.jpg")
    assert not facts["own"] and Image.open(io.BytesIO(sent)).size == (1024, 768)


def _text_chunk(key: str, value: str):  # noqa: ANN202 - a PngInfo
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(key, value)
    return info
