"""Exporter: parity against a TensorFlow GradientTape reference for keras.applications
backbones, saved to disk and reloaded, as users do. `make test` keeps one model per structure
that matters here (a nested squeeze-excite backbone, a Keras 3 Sequential with a Flatten head);
real-world files (tf.keras, Teachable Machine, other heads) are in test_real_models.py, and
every family in every form is exported by `make zoo` (docs/MODELS.md)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import numerics

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from dermcam import cam  # noqa: E402
from dermcam.engine import LiteRTEngine  # noqa: E402
from dermcam.keras_engine import KerasEngine, preprocess  # noqa: E402
from dermcam.keras_loading import load_model_file  # noqa: E402
from model_store.demos.calibrate import calibrate_batchnorm, calibration_batch  # noqa: E402
from model_store.exporting import parity  # noqa: E402
from model_store.exporting.cli import input_size, main  # noqa: E402
from model_store.exporting.errors import ExportError  # noqa: E402
from model_store.exporting.export import export  # noqa: E402
from model_store.exporting.labels import parse_labels  # noqa: E402
from model_store.synthetic import CLASSES, dataset  # noqa: E402

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics

SIZE = 96
LABELS = [{"code": c, "name": n} for c, n in CLASSES]
BACKBONES = {
    "MobileNetV2": (keras.applications.MobileNetV2, "tf"),
    "EfficientNetB0": (keras.applications.EfficientNetB0, "none"),
    "ResNet50": (keras.applications.ResNet50, "caffe"),
    "DenseNet121": (keras.applications.DenseNet121, "torch"),
}


def build(arch: str, form: str) -> keras.Model:
    factory, _ = BACKBONES[arch]
    shape = (SIZE, SIZE, 3)
    if form == "flat":
        return factory(weights=None, input_shape=shape, classes=len(LABELS))
    backbone = factory(weights=None, include_top=False, input_shape=shape)
    if form == "nested":  # augmentation in front, a two-layer head with dropout
        inputs = keras.Input(shape)
        x = keras.layers.RandomFlip()(inputs)
        x = backbone(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(32, activation="relu")(x)
        x = keras.layers.Dropout(0.3)(x)
        return keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(x))
    return keras.Sequential(
        [  # a Flatten head, as transfer-learning tutorials write it
            keras.Input(shape),
            keras.layers.RandomRotation(0.1),
            backbone,
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(len(LABELS), activation="softmax"),
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,form,suffix",
    [("EfficientNetB0", "nested", ".keras"), ("MobileNetV2", "sequential", ".h5")],
)
def test_parity_with_tensorflow(arch, form, suffix, tmp_path):
    mode = BACKBONES[arch][1]
    model = build(arch, form)
    calibrate_batchnorm(model, preprocess(mode, tf.constant(calibration_batch(SIZE))).numpy())
    source = tmp_path / f"model{suffix}"
    model.save(source)
    out = tmp_path / "exported"
    manifest = export(
        load_model_file(source),
        LABELS,
        out,
        name=arch,
        preprocessing=mode,
        source=source,
        log=lambda _: None,
    )

    figures = manifest["parity"]
    numerics.at_most("parity.max_abs_prob_diff", figures["max_abs_prob_diff"])
    assert figures["top1_agreement"] == 1.0
    numerics.at_least("parity.cam_pearson_min", figures["cam_pearson_min"])
    for kind in ("predict", "gradcam"):
        assert not [op for op in manifest["artifacts"][kind]["ops"] if op.startswith("Flex")]
    target = manifest["target_layer"]
    assert ("/" in target) == (form != "flat"), target

    # An independent check: the reloaded reference engine against the artifacts.
    lite, reference = LiteRTEngine(str(out)), KerasEngine(str(out))
    images, _, _ = dataset(99, 2, SIZE)
    for image in images:
        tensor = image[None].astype(np.float32)
        probs = lite.predict(tensor)
        numerics.close("litert_vs_tf.probabilities_deep", probs, reference.predict(tensor))
        top = int(np.argmax(probs))
        ref, got = reference.explain(tensor, top), lite.explain(tensor, top)
        ref_map = cam.linear_map(ref.activations, ref.gradients, "gradcam")
        assert ref_map.std() > 0, "the reference map is flat: nothing was compared"
        got_map = cam.linear_map(got.activations, got.gradients, "gradcam")
        numerics.at_least("litert_vs_tf.map_pearson", numerics.pearson(ref_map, got_map))


def _small(output_activation: str = "softmax") -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="early")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="depthwise")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu6", name="late")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation=output_activation)(x))


def test_dense_concatenation_and_transition_pooling(tmp_path):
    """DenseNet's structure in miniature: concatenated feature maps, BatchNorm, ReLU, and an
    average-pooling transition between blocks (AvgPoolGrad rewritten to builtins)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(
        keras.layers.Rescaling(1 / 255)(inputs)
    )
    for block in range(2):
        for unit in range(3):
            y = keras.layers.BatchNormalization(name=f"b{block}_u{unit}_bn")(x)
            y = keras.layers.ReLU(name=f"b{block}_u{unit}_relu")(y)
            y = keras.layers.Conv2D(4, 3, padding="same", name=f"b{block}_u{unit}_conv")(y)
            x = keras.layers.Concatenate(name=f"b{block}_u{unit}_concat")([x, y])
        if block == 0:
            x = keras.layers.AveragePooling2D(2, name="transition_pool")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU(name="final_relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    calibrate_batchnorm(model, calibration_batch(32))
    for target in ("final_relu", "b0_u1_concat"):  # the second is before the transition
        manifest = export(model, LABELS[:3], tmp_path / target, target=target, log=lambda _: None)
        assert parity.Parity(**manifest["parity"]).passes(), manifest["parity"]


def test_inner_target_through_depthwise_gradient(tmp_path):
    manifest = export(_small(), LABELS[:3], tmp_path / "m", target="pool", log=lambda _: None)
    assert manifest["target_layer"] == "pool"
    assert manifest["activations_shape"] == [16, 16, 8]
    assert parity.Parity(**manifest["parity"]).passes()


def test_pool_gradients_reach_an_early_target(tmp_path):
    """The gradient from `late` back to `early` crosses a MaxPool (builtin rewrite)."""
    manifest = export(_small(), LABELS[:3], tmp_path / "m", target="early", log=lambda _: None)
    assert manifest["activations_shape"] == [32, 32, 8]
    assert parity.Parity(**manifest["parity"]).passes()


def test_a_flex_only_gradient_is_named(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="early")(inputs)
    x = keras.layers.UpSampling2D(interpolation="bilinear")(x)  # ResizeBilinearGrad: Flex
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="late")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(ExportError, match="ResizeBilinearGrad"):
        export(model, LABELS[:3], tmp_path / "m", target="early", log=lambda _: None)
    assert not (tmp_path / "m").exists()
    chosen = export(model, LABELS[:3], tmp_path / "auto", log=lambda _: None)
    assert chosen["target_layer"] == "late"


def test_model_answering_logits_gets_a_softmax(tmp_path):
    manifest = export(_small("linear"), LABELS[:3], tmp_path / "m", log=lambda _: None)
    engine = LiteRTEngine(str(tmp_path / "m"))
    probs = engine.predict(np.full((1, 32, 32, 3), 120, np.float32))
    assert abs(float(probs.sum()) - 1) < 1e-5 and manifest["score"] == "logit"


def test_multilabel_sigmoid_head_keeps_independent_probabilities(tmp_path):
    model = _small("sigmoid")
    manifest = export(model, LABELS[:3], tmp_path / "m", log=lambda _: None)
    assert manifest["head"]["kind"] == "multilabel"
    assert manifest["head"]["probabilities"] == "independent"
    engine = LiteRTEngine(str(tmp_path / "m"))
    assert engine.manifest.summary()["probabilities"] == "independent"
    x = np.full((1, 32, 32, 3), 90, np.float32)
    numerics.close("litert_vs_tf.probabilities", engine.predict(x), model(x).numpy()[0])


def test_an_output_with_no_logit_needs_probability_score(tmp_path):
    with pytest.raises(ExportError, match="--score probability"):
        export(_small("relu"), LABELS[:3], tmp_path / "a", log=lambda _: None)
    manifest = export(
        _small("relu"), LABELS[:3], tmp_path / "b", score="probability", log=lambda _: None
    )
    assert manifest["score"] == "probability" and manifest["head"]["kind"] == "other"


def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "MAX_PROB_DIFF", -1.0)
    with pytest.raises(ExportError, match="Nothing was written"):
        export(_small(), LABELS[:3], tmp_path / "m", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_the_suggested_tolerance_rounds_the_measured_difference_up():
    def figures(diff: float) -> parity.Parity:
        return parity.Parity(6, diff, 1.0, 1.0, 1.0, 1e-5)

    assert figures(2.1e-4).suggested_tolerance() == pytest.approx(4e-4)  # 1.5 × 2.1e-4, up
    assert figures(1e-4).suggested_tolerance() == pytest.approx(2e-4)
    assert figures(0.0).suggested_tolerance() == 0.0  # nothing differed (seen on one CPU)


def test_label_count_must_match(tmp_path):
    with pytest.raises(ExportError, match="3 outputs but 7 labels"):
        export(_small(), LABELS, tmp_path / "m", log=lambda _: None)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """A calibrated MobileNetV2 and its float32 export, shared by the quantisation tests."""
    model = keras.applications.MobileNetV2(
        weights=None, alpha=0.5, input_shape=(64, 64, 3), classes=len(LABELS)
    )
    calibrate_batchnorm(model, preprocess("tf", tf.constant(calibration_batch(64))).numpy())
    out = tmp_path_factory.mktemp("f32") / "m"
    return model, export(model, LABELS, out, preprocessing="tf", log=lambda _: None)


@pytest.mark.parametrize("quantization", ["float16", "dynamic-int8"])
def test_quantised_exports_are_smaller_and_recorded(quantization, mobilenet, tmp_path):
    model, full = mobilenet
    small = export(
        model,
        LABELS,
        tmp_path / "q",
        preprocessing="tf",
        quantization=quantization,
        log=lambda _: None,
    )
    assert small["quantization"] == quantization
    assert small["artifacts"]["predict"]["bytes"] < 0.6 * full["artifacts"]["predict"]["bytes"]
    assert 0 <= small["parity"]["max_abs_prob_diff"] <= 1


def test_labels_from_file_and_list(tmp_path):
    file = tmp_path / "labels.txt"
    file.write_text("mel,Melanoma\nnv,Melanocytic nevus\n\n")
    assert parse_labels(str(file)) == [
        {"code": "mel", "name": "Melanoma"},
        {"code": "nv", "name": "Melanocytic nevus"},
    ]
    assert parse_labels("a, b") == [{"code": "a", "name": "a"}, {"code": "b", "name": "b"}]


def test_labels_from_teachable_machine(tmp_path):
    file = tmp_path / "labels.txt"
    file.write_text("0 Benign\n1 Malignant melanoma\n")
    assert parse_labels(str(file)) == [
        {"code": "benign", "name": "Benign"},
        {"code": "malignant-melanoma", "name": "Malignant melanoma"},
    ]
    file.write_text("1 Benign\n0 Malignant\n")
    with pytest.raises(ExportError, match="0, 1, 2"):
        parse_labels(str(file))


def test_a_looser_tolerance_is_recorded_with_its_reason(tmp_path):
    manifest = export(
        _small(),
        LABELS[:3],
        tmp_path / "m",
        max_prob_diff=5e-4,
        tolerance_reason="checked on our own validation set",
        log=lambda _: None,
    )
    tolerance = manifest["parity"]["tolerance"]
    assert tolerance["max_abs_prob_diff"] == 5e-4 and tolerance["default"] == 1e-4
    assert tolerance["reason"].startswith("checked on our own validation set")
    assert "XNNPACK" in tolerance["reason"]
    assert manifest["parity"]["kernel_prob_spread"] is not None


def test_cli_exports_a_keras_file(tmp_path, capsys):
    source = tmp_path / "small.keras"
    _small().save(source)
    out = ["--out", str(tmp_path / "out"), "--version", "3"]
    # one configuration, few requests: quick (the fit check's own tests measure it fully)
    fit = ["--fitcheck-tiers", "256", "--fitcheck-cpus", "1", "--fitcheck-warm", "4"]
    assert main([str(source), "--labels", "x,y,z", *out, *fit]) == 0
    printed = capsys.readouterr().out
    assert "target layer: late (chosen automatically)" in printed
    # whether it fits is a matter of timing (p50 within 1.25× of 2 GiB): not asserted here
    assert "predict: fits " in printed and "gradcam: fits " in printed
    assert printed.count("   256Mi  1  ") == 2  # the one configuration, for each function
    engine = LiteRTEngine(str(tmp_path / "out"))
    assert engine.manifest.version == "3" and engine.manifest.codes == ["x", "y", "z"]
    assert engine.manifest.raw["fitcheck"]["warm_requests"] == 4
    assert (tmp_path / "out" / "model.keras").is_file()


def test_a_fit_check_without_warm_requests_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["unused.keras", "--labels", "x,y,z", "--out", str(tmp_path), "--fitcheck-warm", "0"])
    assert exited.value.code == 2 and "--fitcheck-warm: at least 1" in capsys.readouterr().err


def test_a_model_built_for_any_size_is_served_at_the_size_given(tmp_path, capsys):
    """Input((None, None, 3)): refused without --input-size (saying so), exported at the size
    given, the Keras engine agreeing with LiteRT there; a layer that is 1×1 at that size is
    not a target, however spatial it is at other sizes."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="early")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="late")(x)
    x = keras.layers.AveragePooling2D(4, name="squeezed")(x)  # 1×1 at 16×16
    x = keras.layers.GlobalAveragePooling2D()(x)
    source = tmp_path / "any_size.keras"
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.save(source)
    model.export(tmp_path / "saved")  # its serving graph only: refused, pointing at the file
    out = ["--out", str(tmp_path / "out"), "--no-fitcheck"]
    assert main([str(tmp_path / "saved"), "--labels", "x,y,z", *out]) == 1
    assert "export the .keras or .h5 file it came from with --input-size" in (
        capsys.readouterr().err
    )
    args = [str(source), "--labels", "x,y,z", *out]

    assert main(args) == 1
    assert "has no fixed size: say the size to serve with --input-size" in capsys.readouterr().err
    assert main([*args, "--input-size", "16"]) == 0
    assert "target layer: late (chosen automatically)" in capsys.readouterr().out
    lite, reference = LiteRTEngine(str(tmp_path / "out")), KerasEngine(str(tmp_path / "out"))
    assert (lite.manifest.height, lite.manifest.width) == (16, 16)
    assert lite.manifest.raw["activations_shape"] == [4, 4, 8]
    tensor = dataset(3, 1, 16)[0].astype(np.float32)
    numerics.close("litert_vs_tf.probabilities", lite.predict(tensor), reference.predict(tensor))
    got, want = lite.explain(tensor, 1), reference.explain(tensor, 1)
    numerics.close(
        "litert_vs_tf.gradients", got.gradients, want.gradients, np.abs(want.gradients).max()
    )


def test_lambda_code_is_loaded_only_when_trusted(tmp_path, capsys):
    """A `.keras` file with a Python-lambda Lambda layer (older tutorials' preprocessing):
    Keras will not run its code by default, so the exporter refuses and says how to trust
    it; trusted, it exports, the manifest says so and the reference engine loads it alike."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t / 127.5 - 1.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="late")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    source = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(source)
    args = [str(source), "--labels", "a,b", "--out", str(tmp_path / "out"), "--no-fitcheck"]

    assert main(args) == 1
    assert "if you trust the file, export it with --trust-lambda-code" in capsys.readouterr().err
    assert main([*args, "--trust-lambda-code"]) == 0
    lite, reference = LiteRTEngine(str(tmp_path / "out")), KerasEngine(str(tmp_path / "out"))
    assert lite.manifest.raw["source"]["trust_lambda_code"] is True
    tensor = dataset(4, 1, 32)[0].astype(np.float32)
    numerics.close("litert_vs_tf.probabilities", lite.predict(tensor), reference.predict(tensor))


def test_input_size_reads_a_side_or_height_x_width():
    assert input_size("224") == (224, 224) and input_size("256x192") == (256, 192)
    for bad in ("big", "4", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError):
            input_size(bad)


def test_cli_fails_cleanly(tmp_path, capsys):
    assert (
        main([str(tmp_path / "missing.keras"), "--labels", "a", "--out", str(tmp_path / "o")]) == 1
    )
    assert "export failed" in capsys.readouterr().err


def test_savedmodel_without_keras_layers(tmp_path, capsys):
    """A SavedModel (here from Keras 3's model.export) has no layers left: the exporter
    imports its frozen serving graph with the target tensor exposed."""
    inputs = keras.Input((SIZE, SIZE, 3))
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    x = keras.layers.Dropout(0.2)(keras.layers.Dense(32, activation="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(x))
    calibrate_batchnorm(model, preprocess("tf", tf.constant(calibration_batch(SIZE))).numpy())
    model.export(str(tmp_path / "saved"), verbose=False)
    codes = ",".join(label["code"] for label in LABELS)
    out = tmp_path / "out"
    assert (
        main(
            [
                str(tmp_path / "saved"),
                "--labels",
                codes,
                "--out",
                str(out),
                "--preprocess",
                "tf",
                "--no-fitcheck",
            ]
        )
        == 0
    )
    assert "out_relu" in capsys.readouterr().out
    engine = LiteRTEngine(str(out))
    assert parity.Parity(**engine.manifest.raw["parity"]).passes()
    assert engine.manifest.raw["activations_shape"] == [3, 3, 1280]
    serving = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    images, _, _ = dataset(31, 2, SIZE)
    for image in images:
        tensor = image[None].astype(np.float32)
        expected = next(iter(serving(preprocess("tf", tf.constant(tensor))).values())).numpy()[0]
        numerics.close("litert_vs_tf.probabilities_deep", engine.predict(tensor), expected)
        explanation = engine.explain(tensor, int(np.argmax(expected)))
        assert np.abs(explanation.gradients).max() > 0
