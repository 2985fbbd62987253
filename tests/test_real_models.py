"""Model files as users have them: a Teachable Machine export, tf.keras `.h5` files and
SavedModels, binary sigmoid, logits and multi-label heads, a model with an auxiliary output.
Each is exported through the CLI (as a user would), checked against the original model loaded
by its own framework, and served by both functions over HTTP."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image

import numerics

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics

from dermcam.engine import LiteRTEngine  # noqa: E402
from dermcam.keras_engine import KerasEngine, preprocess  # noqa: E402
from dermcam.keras_loading import custom_objects_from  # noqa: E402
from model_store.demos import specimens  # noqa: E402
from model_store.exporting import parity  # noqa: E402
from model_store.exporting.cli import main as export_main  # noqa: E402
from model_store.fitting import load, runs  # noqa: E402
from model_store.synthetic import dataset  # noqa: E402

# name → (build(tmp) → (model path, labels argument), preprocessing, expected head kind)
SPECIMENS = {
    "teachable-machine": (
        lambda tmp: (specimens.teachable_machine(tmp), str(tmp / "labels.txt")),
        "tf",
        "softmax",
    ),
    "tfkeras-h5-resnet50-sigmoid": (
        lambda tmp: (
            specimens.tf_keras_classifier(
                tmp / "model.h5", "ResNet50", "sigmoid", preprocessing="caffe"
            ),
            "benign,malignant",
        ),
        "caffe",
        "binary",
    ),
    "tfkeras-savedmodel-mobilenetv2-logits": (
        lambda tmp: (
            specimens.tf_keras_classifier(tmp / "saved", "MobileNetV2", "logits", classes=3),
            "bcc,mel,nv",
        ),
        "tf",
        "logits",
    ),
}


@pytest.fixture(scope="module", params=list(SPECIMENS))
def exported(request, tmp_path_factory):
    """(name, model dir, source path) of one specimen exported through the CLI."""
    name = request.param
    build, preprocessing, _ = SPECIMENS[name]
    tmp = tmp_path_factory.mktemp(name)
    source, labels = build(tmp)
    out = tmp / "exported"
    argv = [str(source), "--labels", labels, "--out", str(out), "--preprocess", preprocessing]
    assert export_main([*argv, "--no-fitcheck"]) == 0
    return name, out, source


def _images(size: int, count: int = 3) -> list[np.ndarray]:
    images, _, _ = dataset(77, count, size)
    return [image[None].astype(np.float32) for image in images]


def test_exports_pass_parity_and_record_how_they_were_loaded(exported):
    name, out, _ = exported
    manifest = LiteRTEngine(str(out)).manifest.raw
    assert parity.Parity(**manifest["parity"]).passes(), manifest["parity"]
    assert manifest["head"]["kind"] == SPECIMENS[name][2]
    assert manifest["source"]["loader"] == "tf_keras"
    assert manifest["exporter"]["loaded_with"].startswith("tf_keras 2.")
    assert len(manifest["labels"]) == 2 or name.endswith("logits")


def test_artifacts_answer_what_the_original_model_answers(exported):
    """The original file loaded by tf_keras itself, not through the exporter's replay."""
    name, out, source = exported
    original = tf_keras.models.load_model(source, compile=False)
    lite, reference = LiteRTEngine(str(out)), KerasEngine(str(out))
    mode = SPECIMENS[name][1]
    for tensor in _images(lite.manifest.height):
        raw = original(preprocess(mode, tf.constant(tensor)), training=False).numpy()[0]
        expected = {
            "softmax": raw,
            "binary": np.array([1 - raw[0], raw[0]]),
            "logits": tf.nn.softmax(raw).numpy(),
        }[SPECIMENS[name][2]]
        got = lite.predict(tensor)
        numerics.close("litert_vs_tf.probabilities_deep", got, expected)
        numerics.close("litert_vs_tf.probabilities", reference.predict(tensor), expected)
        assert abs(float(got.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("exported", ["tfkeras-h5-resnet50-sigmoid"], indirect=True)
def test_binary_maps_of_the_two_classes_are_opposite(exported):
    """With one sigmoid unit the logit score of class 0 is -z: its gradient is the negation."""
    name, out, _ = exported
    lite = LiteRTEngine(str(out))
    tensor = _images(lite.manifest.height, 1)[0]
    benign, malignant = lite.explain(tensor, 0), lite.explain(tensor, 1)
    np.testing.assert_allclose(benign.gradients, -malignant.gradients, rtol=1e-5, atol=1e-9)
    assert np.abs(malignant.gradients).max() > 0


@pytest.mark.parametrize("exported", ["tfkeras-h5-resnet50-sigmoid"], indirect=True)
def test_the_fit_check_measures_a_two_class_model(exported, tmp_path):
    """It asks gradcam for each class the model has in turn (it once cycled the demo's seven,
    so every binary model "fit" no configuration: each request past the second was a 422)."""
    _, out, _ = exported
    plan = load.request_plan(7)
    run = runs.run_function("gradcam", out, runs.BASELINE_MB, plan, log_dir=tmp_path)
    assert run.answered and run.complete, run.note
    assert run.requests == len(plan) - 1 and run.errors == 0
    assert run.fits(baseline=None)


def _png(size: int) -> bytes:
    image = Image.fromarray(dataset(5, 1, size)[0][0])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_both_functions_serve_the_export(exported, single_function):
    name, out, _ = exported
    env = {"DERMCAM_MODEL_DIR": str(out)}
    codes = [label["code"] for label in LiteRTEngine(str(out)).manifest.raw["labels"]]
    upload = _png(300)
    predict_url, _ = single_function("predict", env, with_storage=False)
    answer = requests.post(
        predict_url, data=upload, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert sorted(p["code"] for p in body["predictions"]) == sorted(codes)
    assert body["model"]["probabilities"] == "exclusive"
    assert abs(sum(p["probability"] for p in body["predictions"]) - 1) < 1e-4

    gradcam_url, _ = single_function("gradcam", env)
    requests.get(gradcam_url, params={"warmup": "1"}, timeout=60)  # storage ready, as scheduled
    for code in codes:
        answer = requests.post(
            gradcam_url,
            data=upload,
            params={"class": code},
            timeout=60,
            headers={"Content-Type": "image/png"},
        )
        assert answer.status_code == 200, answer.text
        heatmap = answer.json()["heatmap"]
        assert heatmap["stored"] and len(heatmap["grid"]) > 1
        assert answer.json()["target"]["code"] == code


CUSTOM_LAYERS = """
import tensorflow as tf
import tf_keras


def swish(x):
    return x * tf.sigmoid(x)


class FixedDropout(tf_keras.layers.Dropout):  # as the `efficientnet` package defines it
    def _get_noise_shape(self, inputs):
        if self.noise_shape is None:
            return self.noise_shape
        shape = tf_keras.backend.shape(inputs)
        return tuple(shape[a] if s is None else s for a, s in enumerate(self.noise_shape))
"""


def test_a_model_with_layers_of_its_own_exports_with_their_code(tmp_path, capsys):
    """A tf.keras `.h5` built with the `efficientnet` package's FixedDropout and swish (how
    many Kaggle ISIC models were made): refused with the advice to give their code; exported
    with --custom-objects, which is kept beside the model for the reference engine."""
    code = tmp_path / "layers.py"
    code.write_text(CUSTOM_LAYERS)
    own = custom_objects_from(code)
    assert set(own) == {"swish", "FixedDropout"}
    inputs = tf_keras.Input((32, 32, 3))
    x = tf_keras.layers.Conv2D(8, 3, padding="same", activation=own["swish"], name="c1")(inputs)
    x = own["FixedDropout"](0.2, noise_shape=(None, 1, 1, 1), name="drop")(x)
    x = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="late")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    source = tmp_path / "model.h5"
    tf_keras.Model(inputs, tf_keras.layers.Dense(2, activation="softmax")(x)).save(source)
    out = tmp_path / "exported"
    args = [str(source), "--labels", "a,b", "--out", str(out), "--no-fitcheck"]

    assert export_main(args) == 1
    assert "give their code with --custom-objects FILE.py" in capsys.readouterr().err
    assert export_main([*args, "--custom-objects", str(code)]) == 0
    lite, reference = LiteRTEngine(str(out)), KerasEngine(str(out))
    assert lite.manifest.raw["source"]["custom_objects"] == "custom_objects.py"
    assert (out / "custom_objects.py").read_text() == CUSTOM_LAYERS
    tensor = _images(32, 1)[0]
    numerics.close("litert_vs_tf.probabilities", lite.predict(tensor), reference.predict(tensor))


def test_a_multi_output_model_names_its_candidates(tmp_path, capsys):
    source = specimens.multi_output(tmp_path / "two_outputs.keras")
    out = tmp_path / "exported"
    argv = [str(source), "--labels", "akiec,bcc,mel", "--out", str(out), "--no-fitcheck"]
    assert export_main(argv) == 1
    message = capsys.readouterr().err
    assert "2 outputs" in message and "--output-layer" in message
    assert "diagnosis (Dense, 3 units, softmax)" in message
    assert "embedding (Dense, 16 units, linear)" in message
    assert not out.exists()

    assert export_main([*argv, "--output-layer", "diagnosis"]) == 0
    lite, reference = LiteRTEngine(str(out)), KerasEngine(str(out))
    assert lite.manifest.raw["head"]["output_layer"] == "diagnosis"
    tensor = _images(64, 1)[0]
    numerics.close("litert_vs_tf.probabilities", lite.predict(tensor), reference.predict(tensor))


def test_one_sigmoid_unit_needs_two_labels(tmp_path, capsys):
    source = specimens.tf_keras_classifier(tmp_path / "m.h5", "MobileNetV2", "sigmoid", size=32)
    argv = [str(source), "--labels", "malignant", "--out", str(tmp_path / "o"), "--no-fitcheck"]
    assert export_main(argv) == 1
    assert "two labels, the class of p = 0 first" in capsys.readouterr().err
