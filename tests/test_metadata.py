"""Patient metadata: the schema contract (encoding field by field), validation messages, and
the named-inputs path that keys everything by image + metadata."""

from __future__ import annotations

import numpy as np
import pytest

from dermcam.errors import InvalidMetadata
from dermcam.metadata import SchemaError, parse_schema

ISSUE_SCHEMA = {
    "input": "meta_input",
    "fields": [
        {
            "name": "sex",
            "type": "categorical",
            "categories": ["female", "male", "unknown"],
            "default": "unknown",
        },
        {
            "name": "site",
            "type": "categorical",
            "categories": ["arm", "head-or-neck", "leg-or-genital", "trunk", "unknown"],
            "default": "unknown",
        },
        {
            "name": "age",
            "type": "numeric",
            "scale": 0.0111111,
            "offset": 0.0,
            "min": 0,
            "max": 120,
            "missing": {"fill": 51.9, "indicator": True},
        },
    ],
}


@pytest.fixture
def schema():
    return parse_schema(ISSUE_SCHEMA)


def test_encoding_follows_the_contract(schema):
    encoded = schema.encode({"sex": "male", "site": "trunk", "age": "45"})
    expected = [0, 1, 0, 0, 0, 0, 1, 0, 45 * 0.0111111, 0.0]
    np.testing.assert_allclose(encoded.inputs["meta_input"], [expected], rtol=1e-6)
    assert encoded.inputs["meta_input"].dtype == np.float32
    assert schema.inputs[0].width == 10
    assert encoded.used["age"] == {"value": 45.0, "used": 45.0, "defaulted": False}


def test_missing_values_take_defaults_and_the_fill(schema):
    encoded = schema.encode({"age": ""})
    expected = [0, 0, 1, 0, 0, 0, 0, 1, 51.9 * 0.0111111, 1.0]
    np.testing.assert_allclose(encoded.inputs["meta_input"], [expected], rtol=1e-6)
    assert encoded.used["sex"] == {"value": None, "used": "unknown", "defaulted": True}
    assert encoded.used["age"] == {"value": None, "used": 51.9, "defaulted": True}


@pytest.mark.parametrize(
    "values,message",
    [
        ({"sex": "other"}, "'sex' must be one of: female, male, unknown"),
        ({"age": "130"}, "'age' must be a number between 0 and 120 (got 130)"),
        ({"age": "-1"}, "between 0 and 120"),
        ({"age": "forty"}, "'age' must be a number"),
        ({"age": "nan"}, "finite"),
        ({"aeg": "40"}, "Unknown field 'aeg'; this model takes: sex, site, age"),
    ],
)
def test_invalid_values_name_the_field_and_what_it_accepts(schema, values, message):
    with pytest.raises(InvalidMetadata) as caught:
        schema.encode(values)
    assert message in caught.value.message
    assert caught.value.status == 422


def test_the_digest_changes_with_any_value(schema):
    a = schema.encode({"age": 40}).digest
    assert a == schema.encode({"age": "40"}).digest  # the same encoded vector
    assert a != schema.encode({"age": 41}).digest
    assert a != schema.encode({"age": 40, "site": "arm"}).digest
    assert len(a) == 12


def test_required_fields_and_several_inputs():
    schema = parse_schema(
        [
            {
                "input": "sex_in",
                "fields": [{"name": "sex", "type": "categorical", "categories": ["f", "m"]}],
            },
            {"input": "age_in", "fields": [{"name": "age", "type": "numeric", "min": 0}]},
        ]
    )
    with pytest.raises(InvalidMetadata, match="'sex' is required"):
        schema.encode({"age": 3})
    encoded = schema.encode({"sex": "m", "age": 3})
    assert set(encoded.inputs) == {"sex_in", "age_in"}
    assert schema.example().inputs["sex_in"].tolist() == [[1.0, 0.0]]
    assert parse_schema(schema.as_json()) == schema


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"fields": []}, "non-empty list"),
        ({"fields": [{"name": "class", "type": "numeric"}]}, "reserved"),
        ({"input": "image", "fields": [{"name": "a", "type": "numeric"}]}, "may not be"),
        ({"fields": [{"name": "a", "type": "text"}]}, "'type' must be one of"),
        (
            {"fields": [{"name": "a", "type": "categorical", "categories": ["x"], "default": "y"}]},
            "not one of its categories",
        ),
        (
            {"fields": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}]},
            "unique",
        ),
    ],
)
def test_malformed_schemas_are_refused(raw, message):
    with pytest.raises(SchemaError, match=message):
        parse_schema(raw)


def test_named_inputs_key_by_image_and_metadata(schema, demo_model_dir, lesion_png):
    from dataclasses import replace

    from dermcam import imaging
    from dermcam.inputs import image_input, model_inputs
    from dermcam.manifest import read_manifest

    plain = read_manifest(demo_model_dir)
    decoded = imaging.decode(lesion_png, 10_000_000, image_input(plain))
    only_image = model_inputs(plain, decoded, {"class": "mel", "method": "gradcam"})
    assert only_image.key == decoded.sha256 and only_image.extras == {}
    assert only_image.answer() == {}
    with pytest.raises(InvalidMetadata, match="this model takes only the image"):
        model_inputs(plain, decoded, {"age": "40"})

    with_metadata = replace(plain, metadata=schema)
    forty = model_inputs(with_metadata, decoded, {"age": "40", "class": "mel"})
    fifty = model_inputs(with_metadata, decoded, {"age": "50"})
    assert forty.key.startswith(decoded.sha256 + "-m") and forty.key != fifty.key
    assert forty.answer()["metadata"]["age"]["used"] == 40.0
