"""Both functions with the metadata demo model (image + patient age, sex and site) over HTTP:
fields as form fields, JSON fields or query arguments, validation, the echo, ?model=1, and
heatmaps keyed by image and metadata."""

from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from PIL import Image

from conftest import ROOT

METADATA_MODEL = ROOT / "model_store" / "models" / "demo-metadata" / "1"
ENV = {"DERMCAM_MODEL_DIR": str(METADATA_MODEL)}


@pytest.fixture(scope="module")
def nevus_png() -> bytes:
    """A lesion with a nevus's look: its class depends on the patient's age and site."""
    from model_store.synthetic import lesion_image

    pixels, _ = lesion_image(seed=9, index=3, size=160, label=5)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def functions(single_function):
    predict_url, _ = single_function("predict", ENV, with_storage=False)
    gradcam_url, _ = single_function("gradcam", ENV)
    requests.get(gradcam_url, params={"warmup": "1"}, timeout=60)  # storage ready
    return predict_url, gradcam_url


def probabilities(body: dict) -> dict[str, float]:
    return {p["code"]: p["probability"] for p in body["predictions"]}


def test_fields_as_form_json_or_query_give_the_same_answer(functions, nevus_png):
    predict_url, _ = functions
    fields = {"sex": "male", "site": "trunk", "age": "72"}
    form = requests.post(predict_url, files={"image": ("a.png", nevus_png)}, data=fields)
    encoded = base64.b64encode(nevus_png).decode()
    as_json = requests.post(predict_url, json={"image": encoded, **fields, "age": 72})
    query = requests.post(
        predict_url, data=nevus_png, params=fields, headers={"Content-Type": "image/png"}
    )
    answers = [r.json() for r in (form, as_json, query)]
    assert [r.status_code for r in (form, as_json, query)] == [200, 200, 200]
    assert probabilities(answers[0]) == probabilities(answers[1]) == probabilities(answers[2])
    assert answers[0]["metadata"] == {
        "sex": {"value": "male", "used": "male", "defaulted": False},
        "site": {"value": "trunk", "used": "trunk", "defaulted": False},
        "age": {"value": 72.0, "used": 72.0, "defaulted": False},
    }


def test_missing_fields_are_filled_and_said_so(functions, nevus_png):
    predict_url, _ = functions
    body = requests.post(predict_url, files={"image": ("a.png", nevus_png)}).json()
    assert body["metadata"]["age"] == {"value": None, "used": 51.9, "defaulted": True}
    assert body["metadata"]["site"] == {"value": None, "used": "unknown", "defaulted": True}


def test_the_metadata_changes_the_answer(functions, nevus_png):
    predict_url, _ = functions

    def mel(**fields) -> float:
        answer = requests.post(predict_url, files={"image": ("a.png", nevus_png)}, data=fields)
        return probabilities(answer.json())["mel"]

    assert mel(age="80", site="trunk") > 1.5 * mel(age="25", site="trunk")


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"age": "130"}, "'age' must be a number between 0 and 120 (got 130)"),
        ({"age": "old"}, "'age' must be a number"),
        ({"site": "foot"}, "'site' must be one of: arm, head-or-neck, leg-or-genital, trunk"),
        ({"aeg": "40"}, "Unknown field 'aeg'; this model takes: sex, site, age"),
    ],
)
def test_invalid_fields_are_a_422_naming_the_field(functions, nevus_png, fields, message):
    for url in functions:
        answer = requests.post(url, files={"image": ("a.png", nevus_png)}, data=fields)
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == "invalid_metadata" and message in error["message"]


def test_heatmaps_are_keyed_by_image_and_metadata(functions, nevus_png):
    """The same photo with another age must never be answered with the first age's map."""
    _, gradcam_url = functions

    def explain(age: str) -> dict:
        answer = requests.post(
            gradcam_url,
            files={"image": ("a.png", nevus_png)},
            data={"age": age, "site": "trunk", "class": "mel"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    young, old, young_again = explain("25"), explain("80"), explain("25")
    assert not young["heatmap"]["cached"] and not old["heatmap"]["cached"]
    assert young["heatmap"]["object"] != old["heatmap"]["object"]
    assert young_again["heatmap"]["cached"]
    assert young_again["heatmap"]["object"] == young["heatmap"]["object"]
    assert young["target"]["probability"] != old["target"]["probability"]
    assert old["metadata"]["age"]["used"] == 80.0


def test_model_description_on_both_functions(functions):
    manifest = json.loads((METADATA_MODEL / "manifest.json").read_text())
    for url in functions:
        body = requests.get(url, params={"model": "1"}).json()
        assert body["metadata"] == manifest["metadata"]
        assert body["model"]["name"] == "demo-metadata" and body["model"]["demo"] is True
        assert [label["code"] for label in body["labels"]] == [
            label["code"] for label in manifest["labels"]
        ]
        assert body["input"] == {"height": 96, "width": 96}
        assert {"code": "gradcam++", "name": "Grad-CAM++"} in body["methods"]
    warm = requests.get(functions[1], params={"warmup": "1"}).json()
    assert warm["status"] == "warm"


def test_an_image_only_model_describes_no_metadata_and_refuses_fields(stack, lesion_png):
    body = requests.get(stack.predict_url, params={"model": "1"}).json()
    assert body["metadata"] is None and body["model"]["name"] == "demo"
    answer = requests.post(
        stack.predict_url, files={"image": ("a.png", lesion_png)}, data={"age": "40"}
    )
    assert answer.status_code == 422
    assert "takes only the image" in answer.json()["error"]["message"]
