"""model_store.exporting.graph.grouped: a grouped convolution with one group per channel (how
onnx2tf writes some of PyTorch's depthwise convolutions) becomes DepthwiseConv2dNative, the
same values and the depthwise convolution's gradient, which TensorFlow takes on every CPU
(its grouped gradient it takes on some only)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from model_store.exporting.graph.grouped import grouped_as_depthwise

pytestmark = pytest.mark.numerics


@pytest.mark.parametrize("multiplier", [1, 2])
def test_a_grouped_convolution_is_written_as_the_depthwise_one_it_is(multiplier):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 9, 9, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 1, 4 * multiplier)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 9, 9, 4], tf.float32)])
    def grouped(image: tf.Tensor) -> tf.Tensor:
        return tf.identity(tf.nn.conv2d(image, tf.constant(kernel), 2, "SAME"), name="out")

    graph_def = grouped.get_concrete_function().graph.as_graph_def()
    rewritten = grouped_as_depthwise(graph_def)
    ops = {node.op for node in rewritten.node}
    assert "DepthwiseConv2dNative" in ops and "Conv2D" not in ops

    def run(definition: tf.compat.v1.GraphDef) -> tuple[np.ndarray, np.ndarray | None]:
        def body(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            (y,) = tf.graph_util.import_graph_def(
                definition, input_map={"image:0": image}, return_elements=["out:0"]
            )
            return y, tf.gradients(tf.reduce_sum(y * y), image)[0]

        f = tf.compat.v1.wrap_function(body, [tf.TensorSpec(x.shape, tf.float32)])
        y, g = f(tf.constant(x))
        return y.numpy(), g.numpy()

    y, g = run(rewritten)
    # the grouped form's values, computed by TensorFlow's own grouped kernel (forward only)
    expected = tf.nn.conv2d(x, kernel, 2, "SAME").numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # the gradient the depthwise form promises: that of the same depthwise convolution
    depthwise = tf.constant(kernel.reshape(3, 3, 4, multiplier))
    image = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(image)
        out = tf.nn.depthwise_conv2d(image, depthwise, [1, 2, 2, 1], "SAME")
        loss = tf.reduce_sum(out * out)
    np.testing.assert_allclose(g, tape.gradient(loss, image).numpy(), rtol=1e-5, atol=1e-5)
    # TensorFlow's own gradient of the grouped form exists only on some CPU paths (Eigen's
    # says "Gradients for grouped convolutions are not supported on CPU"; oneDNN on an
    # AVX-512 machine computes one): where it exists it must agree
    try:
        _, theirs = run(graph_def)
    except tf.errors.InvalidArgumentError as exc:
        assert "grouped convolutions" in str(exc)
    else:
        np.testing.assert_allclose(g, theirs, rtol=1e-4, atol=1e-4)
