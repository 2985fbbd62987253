"""The LiteRT engine on the committed demo model: loading, checksums, threads."""

import json
import shutil
import threading

import numpy as np
import pytest

import numerics
from dermcam import imaging
from dermcam.engine import LiteRTEngine, load_engine
from dermcam.errors import ModelUnavailable
from dermcam.manifest import read_manifest

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def engine(demo_model_dir):
    return LiteRTEngine(str(demo_model_dir))


@pytest.fixture
def model_copy(demo_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(demo_model_dir, target)
    return target


def test_manifest_describes_the_demo(demo_model_dir):
    manifest = read_manifest(demo_model_dir)
    assert manifest.demo is True
    assert manifest.codes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert all(label.name and label.name != label.code for label in manifest.labels)
    assert manifest.score == "logit" and manifest.quantization == "none"
    parity = manifest.raw["parity"]
    numerics.at_most("parity.max_abs_prob_diff", parity["max_abs_prob_diff"])
    numerics.at_least("parity.cam_pearson_min", parity["cam_pearson_min"])
    assert parity["top1_agreement"] == 1.0


def test_predict_and_explain_shapes(engine, lesion_rgb):
    tensor = imaging.to_tensor(lesion_rgb, engine.manifest.height, engine.manifest.width)
    probs = engine.predict(tensor)
    assert probs.shape == (7,) and abs(float(probs.sum()) - 1) < 1e-5
    ex = engine.explain(tensor, int(np.argmax(probs)))
    numerics.close("litert.same_graph", ex.probabilities, probs)  # two graphs, one forward
    assert ex.activations.shape == ex.gradients.shape
    assert ex.activations.shape == tuple(engine.manifest.raw["activations_shape"])
    assert np.abs(ex.gradients).max() > 0


def test_gradcam_only_instance_also_predicts(demo_model_dir, engine, lesion_rgb):
    only = LiteRTEngine(str(demo_model_dir), artifacts=("gradcam",))
    tensor = imaging.to_tensor(lesion_rgb, 128, 128)
    numerics.close("litert.same_graph", only.predict(tensor), engine.predict(tensor))


def test_predict_only_instance_refuses_to_explain(demo_model_dir):
    only = LiteRTEngine(str(demo_model_dir), artifacts=("predict",))
    with pytest.raises(ModelUnavailable):
        only.explain(np.zeros((1, 128, 128, 3), np.float32), 0)


def test_target_out_of_range(engine):
    with pytest.raises(ValueError):
        engine.explain(np.zeros((1, 128, 128, 3), np.float32), 7)


def test_checksum_mismatch_is_refused(model_copy):
    with open(model_copy / "predict.tflite", "r+b") as fh:
        fh.seek(2000)
        fh.write(b"\x00" * 16)
    with pytest.raises(ModelUnavailable, match="checksum"):
        LiteRTEngine(str(model_copy), artifacts=("predict",))
    LiteRTEngine(str(model_copy), artifacts=("gradcam",))  # the other artifact is intact


def test_missing_artifact_and_manifest(model_copy):
    (model_copy / "gradcam.tflite").unlink()
    with pytest.raises(ModelUnavailable, match="cannot be read"):
        LiteRTEngine(str(model_copy))
    (model_copy / "manifest.json").unlink()
    with pytest.raises(ModelUnavailable, match="No model manifest"):
        LiteRTEngine(str(model_copy))


def test_malformed_manifest(model_copy):
    raw = json.loads((model_copy / "manifest.json").read_text())
    del raw["labels"]
    (model_copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelUnavailable, match="unreadable"):
        LiteRTEngine(str(model_copy))


def test_concurrent_calls_give_each_caller_its_own_answer(engine):
    from model_store.synthetic import dataset

    images, _, _ = dataset(77, 8, 128)
    tensors = [img[None].astype(np.float32) for img in images]
    expected = [engine.explain(t, 4) for t in tensors]
    errors = []

    def worker(k: int) -> None:
        for _ in range(10):
            i = (k * 3 + _) % len(tensors)
            got = engine.explain(tensors[i], 4)
            if not np.allclose(got.gradients, expected[i].gradients, atol=1e-6):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_keras_reference_engine_agrees(demo_model_dir, engine, lesion_rgb):
    reference = load_engine(str(demo_model_dir), kind="keras")
    tensor = imaging.to_tensor(lesion_rgb, 128, 128)
    numerics.close("litert_vs_tf.probabilities", engine.predict(tensor), reference.predict(tensor))
    a, b = reference.explain(tensor, 2), engine.explain(tensor, 2)
    numerics.close("litert_vs_tf.gradients", b.gradients, a.gradients, np.abs(a.gradients).max())
