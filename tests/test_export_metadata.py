"""Exporting models that take patient metadata beside the image: the schema checked against
the model, parity over varied metadata, the artifacts' named inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import numerics

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from test_metadata import ISSUE_SCHEMA  # noqa: E402

from dermcam.engine import LiteRTEngine  # noqa: E402
from dermcam.keras_engine import KerasEngine  # noqa: E402
from dermcam.metadata import parse_schema  # noqa: E402
from model_store.demos.calibrate import calibrate_batchnorm, calibration_batch  # noqa: E402
from model_store.exporting import parity  # noqa: E402
from model_store.exporting.cli import main as export_main  # noqa: E402

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics

SIZE = 64


def image_and_metadata_model() -> keras.Model:
    """The issue's shape: a nested backbone for the image, a 10-value metadata vector,
    concatenated before the head (here MobileNetV2 at 64 px to stay quick)."""
    image = keras.Input((SIZE, SIZE, 3), name="image")
    meta = keras.Input((10,), name="meta_input")
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=0.35
    )
    x = keras.layers.GlobalAveragePooling2D()(
        backbone(keras.layers.Rescaling(1 / 127.5, -1)(image))
    )
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, activation="relu")(meta)])
    x = keras.layers.Dense(16, activation="relu")(x)
    model = keras.Model([meta, image], keras.layers.Dense(3, activation="softmax")(x))
    calibrate_batchnorm(backbone, calibration_batch(SIZE) / 127.5 - 1)
    return model


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "model.keras"
    image_and_metadata_model().save(path)
    schema = path.parent / "schema.json"
    schema.write_text(json.dumps(ISSUE_SCHEMA))
    return path, schema


def test_export_with_metadata_passes_parity_over_varied_metadata(source, tmp_path):
    model, schema = source
    out = tmp_path / "out"
    argv = [str(model), "--labels", "bcc,mel,nv", "--out", str(out), "--metadata", str(schema)]
    assert export_main([*argv, "--no-fitcheck"]) == 0
    lite, reference = LiteRTEngine(str(out)), KerasEngine(str(out))
    manifest = lite.manifest.raw
    assert manifest["metadata"] == parse_schema(ISSUE_SCHEMA).as_json()
    assert parity.Parity(**manifest["parity"]).passes()
    assert manifest["parity"]["images"] == 6  # site has 5 categories + missing

    tensor = (calibration_batch(SIZE)[:1]).astype(np.float32)
    young = lite.manifest.metadata.encode({"age": 20, "sex": "female"}).inputs
    old = lite.manifest.metadata.encode({"age": 90, "site": "trunk"}).inputs
    assert not np.allclose(lite.predict(tensor, young), lite.predict(tensor, old))
    for extras in (young, old):
        got, want = lite.predict(tensor, extras), reference.predict(tensor, extras)
        numerics.close("litert_vs_tf.probabilities_deep", got, want)  # MobileNetV2 backbone
        ours, theirs = lite.explain(tensor, 1, extras), reference.explain(tensor, 1, extras)
        scale = np.abs(theirs.gradients).max()
        numerics.close("litert_vs_tf.gradients", ours.gradients, theirs.gradients, scale)
    with pytest.raises(ValueError, match="extra inputs"):
        lite.predict(tensor)  # a caller that forgets the metadata is a bug, not a default


def test_parity_metadata_covers_every_category_and_missing_values():
    schema = parse_schema(ISSUE_SCHEMA)
    count = parity.images_needed(schema, 6)
    samples = parity.varied_metadata(schema, count)
    for field in ("sex", "site"):
        seen = {s[field] for s in samples}
        assert set(schema.fields[0 if field == "sex" else 1].categories) <= seen
        assert None in seen
    ages = [s["age"] for s in samples]
    assert None in ages and len({a for a in ages if a is not None}) >= 3
    assert len({schema.encode(s).digest for s in samples}) == count


def test_a_multi_input_model_without_a_schema_says_what_to_add(source, tmp_path, capsys):
    model, _ = source
    argv = [str(model), "--labels", "bcc,mel,nv", "--out", str(tmp_path / "o"), "--no-fitcheck"]
    assert export_main(argv) == 1
    message = capsys.readouterr().err
    assert "meta_input (10 values)" in message and "--metadata SCHEMA.json" in message


def test_a_schema_of_the_wrong_width_is_refused(source, tmp_path, capsys):
    model, _ = source
    narrow = {**ISSUE_SCHEMA, "fields": ISSUE_SCHEMA["fields"][:2]}
    schema = tmp_path / "narrow.json"
    schema.write_text(json.dumps(narrow))
    argv = [str(model), "--labels", "bcc,mel,nv", "--out", str(tmp_path / "o")]
    assert export_main([*argv, "--metadata", str(schema), "--no-fitcheck"]) == 1
    message = capsys.readouterr().err
    assert "encodes 8 values (sex 3, site 5)" in message and "takes 10" in message
