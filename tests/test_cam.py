"""CAM arithmetic: NumPy (from LiteRT outputs) against TensorFlow references."""

import numpy as np
import pytest

import numerics
from dermcam import cam, imaging
from dermcam.engine import LiteRTEngine
from dermcam.errors import UnknownMethod

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def demo(demo_model_dir):
    return LiteRTEngine(str(demo_model_dir))


@pytest.fixture(scope="module")
def reference(demo_model_dir):
    from dermcam.keras_engine import KerasEngine

    return KerasEngine(str(demo_model_dir))


def test_normalise_and_all_zero_map():
    assert cam.normalise(np.array([[0.0, 2.0], [1.0, 0.5]])).max() == 1.0
    assert not cam.normalise(np.zeros((3, 3))).any()
    negative = np.full((2, 2, 3), 1.0), np.full((2, 2, 3), -1.0)  # (A, G): every sum below zero
    assert cam.is_blank(cam.class_map(*negative)) and cam.is_blank(np.zeros((0, 0)))
    assert not cam.is_blank(cam.class_map(negative[0], -negative[1]))


def test_unknown_method_is_a_typed_error():
    with pytest.raises(UnknownMethod):
        cam.class_map(np.ones((2, 2, 3)), np.ones((2, 2, 3)), "../../etc")


def test_upsample_keeps_range_and_size():
    grid = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    up = cam.upsample(grid, 40, 30)
    assert up.shape == (30, 40) and 0.0 <= up.min() and up.max() <= 1.0


def test_gradcam_equals_exact_cam_for_gap_dense_head(demo, reference, lesion_rgb):
    """For GAP → Dense, d logit_c / dA = W[:, c] / (h·w): Grad-CAM is CAM, relu(A · W[:, c])."""
    tensor = imaging.to_tensor(lesion_rgb, demo.manifest.height, demo.manifest.width)
    kernel = reference.forward.model.get_layer("probabilities").kernel.numpy()
    for target in range(len(demo.manifest.labels)):
        ex = demo.explain(tensor, target)
        exact = cam.normalise(np.maximum(ex.activations @ kernel[:, target], 0))
        numerics.close("litert_vs_exact.map", cam.class_map(ex.activations, ex.gradients), exact)


def test_gradcam_plus_plus_matches_a_tensorflow_implementation(demo, reference, lesion_rgb):
    import tensorflow as tf

    tensor = imaging.to_tensor(lesion_rgb, demo.manifest.height, demo.manifest.width)
    for target in (0, 4, 6):
        ref = reference.explain(tensor, target)  # GradientTape, no gradient rewrites
        a, g = tf.constant(ref.activations, tf.float64), tf.constant(ref.gradients, tf.float64)
        alpha = g**2 / (2 * g**2 + tf.reduce_sum(a, axis=(0, 1), keepdims=True) * g**3 + 1e-7)
        alpha = tf.where(g != 0, alpha, tf.zeros_like(alpha))
        weights = tf.reduce_sum(tf.nn.relu(g) * alpha, axis=(0, 1))
        tf_map = tf.nn.relu(tf.reduce_sum(a * weights, axis=-1)).numpy()
        tf_map = tf_map / tf_map.max() if tf_map.max() > 0 else tf_map
        ex = demo.explain(tensor, target)  # LiteRT artifact
        ours = cam.class_map(ex.activations, ex.gradients, "gradcam++")
        numerics.at_least("cam_vs_tf.pearson", numerics.pearson(ours, tf_map))
        numerics.close("cam_vs_tf.map", ours, tf_map)


def test_methods_share_one_shape():
    a = np.random.default_rng(0).random((4, 4, 8))
    g = np.random.default_rng(1).normal(size=(4, 4, 8))
    for method in cam.METHODS:
        assert cam.class_map(a, g, method).shape == (4, 4)


def _loops(a, g):
    """The published formulas written out position by position, channel by channel."""
    h, w, k = a.shape
    out = {name: np.zeros((h, w)) for name in ("xgradcam", "hirescam", "elementwise", "layer")}
    for c in range(k):
        weight = sum(g[i, j, c] * a[i, j, c] for i in range(h) for j in range(w))
        weight /= sum(a[i, j, c] for i in range(h) for j in range(w)) + cam.EPS
        for i in range(h):
            for j in range(w):
                out["xgradcam"][i, j] += weight * a[i, j, c]
                out["hirescam"][i, j] += g[i, j, c] * a[i, j, c]
                out["elementwise"][i, j] += max(g[i, j, c] * a[i, j, c], 0.0)
                out["layer"][i, j] += max(g[i, j, c], 0.0) * a[i, j, c]
    return out


def test_new_methods_match_their_published_formulas():
    rng = np.random.default_rng(4)
    a = rng.random((5, 6, 7))
    g = rng.normal(size=(5, 6, 7))
    expected = _loops(a, g)
    for method, key in (
        ("xgradcam", "xgradcam"),
        ("hirescam", "hirescam"),
        ("gradcam-elementwise", "elementwise"),
        ("layercam", "layer"),
    ):
        np.testing.assert_allclose(cam.linear_map(a, g, method), expected[key], rtol=1e-5)


def test_eigen_methods_are_the_centred_first_principal_component():
    rng = np.random.default_rng(5)
    pattern = np.outer(np.hanning(6), np.hanning(6))  # one spatial pattern in every channel
    a = pattern[..., None] * rng.random(8) + 0.01 * rng.random((6, 6, 8))
    flat = a.reshape(36, 8) - a.reshape(36, 8).mean(axis=0)
    expected = (flat @ np.linalg.svd(flat)[2][0]).reshape(6, 6)  # sign as numpy gives it
    got = cam.linear_map(a, np.ones_like(a), "eigencam")
    assert abs(np.corrcoef(got.ravel(), expected.ravel())[0, 1]) > 0.99999
    # signed so the map agrees with the activations: the pattern's peak stays the peak
    assert np.unravel_index(np.argmax(got), got.shape) == np.unravel_index(
        np.argmax(pattern), pattern.shape
    )
    g = rng.normal(size=a.shape)
    both = cam.linear_map(a, g, "eigengradcam")
    np.testing.assert_allclose(both, cam.first_component((a * g).astype(np.float64)), rtol=1e-5)


def test_hirescam_is_gradcam_for_a_gap_dense_head(demo, lesion_rgb):
    """With d score / dA = W[:, c] / (h·w) everywhere, G ⊙ A summed over channels is CAM."""
    tensor = imaging.to_tensor(lesion_rgb, demo.manifest.height, demo.manifest.width)
    ex = demo.explain(tensor, 4)
    for method in ("hirescam", "xgradcam"):
        ours = cam.class_map(ex.activations, ex.gradients, method)
        np.testing.assert_allclose(ours, cam.class_map(ex.activations, ex.gradients), atol=1e-4)


def test_eigencam_is_the_same_for_every_class(demo, lesion_rgb):
    tensor = imaging.to_tensor(lesion_rgb, demo.manifest.height, demo.manifest.width)
    explained = [demo.explain(tensor, c) for c in (0, 4)]
    maps = [cam.class_map(e.activations, e.gradients, "eigencam") for e in explained]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)
