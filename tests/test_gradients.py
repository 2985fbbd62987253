"""Builtin-only gradient rewrites: equal to TensorFlow's own gradients, and convertible to
LiteRT without Flex ops, for every stride, padding and window the keras.applications use."""

from __future__ import annotations

import numpy as np
import pytest

import numerics

tf = pytest.importorskip("tensorflow")

from model_store.exporting.graph.convert import to_tflite  # noqa: E402
from model_store.exporting.graph.gradients import builtin_gradients  # noqa: E402

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics

SHAPE = (1, 11, 13, 4)  # odd sizes: SAME padding is uneven


def _ops(size: tuple[int, int], stride: int, padding: str) -> dict:
    return {
        "avg": lambda x: tf.nn.avg_pool2d(x, size, stride, padding),
        "max": lambda x: tf.nn.max_pool2d(x, size, stride, padding),
    }


def _inputs(ties: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=SHAPE).astype(np.float32)
    if ties:  # after a ReLU, whole windows are 0: ties that TensorFlow routes to one input
        x = np.maximum(x, 0.0)
        x[:, :4, :4, :] = 0.0
    return x


WINDOWS = [
    ((2, 2), 2, "VALID"),
    ((3, 3), 2, "SAME"),
    ((3, 3), 2, "VALID"),
    ((3, 3), 1, "SAME"),
    ((2, 2), 2, "SAME"),
    ((3, 3), 3, "VALID"),
    ((5, 5), 2, "SAME"),
]


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("size,stride,padding", WINDOWS)
@pytest.mark.parametrize("ties", [False, True])
def test_pool_gradients_equal_tensorflows(kind, size, stride, padding, ties):
    op = _ops(size, stride, padding)[kind]
    x = tf.constant(_inputs(ties))
    weights = tf.constant(np.random.default_rng(1).normal(size=op(x).shape).astype(np.float32))

    with tf.GradientTape() as tape:
        tape.watch(x)
        expected = tape.gradient(tf.reduce_sum(op(x) * weights), x)

    @tf.function
    def rewritten(x: tf.Tensor) -> tf.Tensor:
        with builtin_gradients():
            y = op(x)
        return tf.gradients(tf.reduce_sum(y * weights), x)[0]

    got = rewritten(x)
    scale = np.abs(expected.numpy()).max()
    numerics.close("gradients.builtin_vs_tf", got.numpy(), expected.numpy(), scale)


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pool_gradients_convert_to_builtins(kind):
    from ai_edge_litert.interpreter import Interpreter

    op = _ops((3, 3), 2, "SAME")[kind]
    weights = tf.Variable(np.random.default_rng(2).normal(size=(1, 6, 7, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec(SHAPE, tf.float32, name="x")])
    def gradient(x: tf.Tensor) -> dict:
        with builtin_gradients():
            y = op(x)
        return {"g": tf.gradients(tf.reduce_sum(y * weights), x)[0]}

    flatbuffer = to_tflite(gradient.get_concrete_function(), [weights])
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    x = _inputs(ties=True)
    want = gradient(tf.constant(x))["g"].numpy()
    numerics.close("gradients.litert_vs_tf", runner(x=x)["g"], want, np.abs(want).max())


# What onnx2tf writes for ONNX Slice and equal Splits, and what a Keras model's own indexing
# writes: each a StridedSlice whose TensorFlow gradient (StridedSliceGrad) is Flex-only.
SLICES = {
    "channel-split": (lambda x: x[..., 2:], "PAD"),  # ShuffleNetV2's second half
    "class-token-dropped": (lambda x: x[:, 1:, :, :], "PAD"),  # a ViT's prefix tokens
    "qkv-unbind": (lambda x: tf.reshape(x, [1, 11, 13, 2, 2])[:, :, :, 1], "PAD"),  # shrink
    "every-second": (lambda x: x[:, ::2, 1::3, :], "GATHER"),  # strides above 1
    "reversed": (lambda x: x[:, ::-1, :, 1:3], "GATHER"),
    "new-axis": (lambda x: x[..., tf.newaxis, 1:3], "PAD"),  # ellipsis and new axis
}


def _slice_gradients(slicer):
    x = tf.constant(_inputs(ties=False))
    weights = np.random.default_rng(3).normal(size=slicer(x).shape).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec(SHAPE, tf.float32, name="x")])
    def rewritten(x: tf.Tensor) -> dict:
        with builtin_gradients():
            y = slicer(x)
        return {"g": tf.gradients(tf.reduce_sum(y * y * weights), x)[0]}

    with tf.GradientTape() as tape:  # y·y: dy depends on x, so the graph is not folded away
        tape.watch(x)
        y = slicer(x)
        expected = tape.gradient(tf.reduce_sum(y * y * weights), x).numpy()
    return x.numpy(), rewritten, expected


@pytest.mark.parametrize("name", sorted(SLICES))
def test_slice_gradients_are_tensorflows_in_builtins(name):
    """Equal to StridedSliceGrad (placing values is exact: the same products, bit for bit),
    and served by LiteRT with the op `_placed` promises: PAD for a box, GATHER otherwise."""
    from ai_edge_litert.interpreter import Interpreter

    slicer, op = SLICES[name]
    x, rewritten, expected = _slice_gradients(slicer)
    assert np.array_equal(rewritten(tf.constant(x))["g"].numpy(), expected)
    flatbuffer = to_tflite(rewritten.get_concrete_function(), [])
    interpreter = Interpreter(model_content=flatbuffer)
    ops = {o["op_name"] for o in interpreter._get_ops_details()}
    assert op in ops and not [o for o in ops if o.startswith("Flex")], ops
    runner = interpreter.get_signature_runner("serving_default")
    scale = np.abs(expected).max()
    numerics.close("gradients.litert_vs_tf", runner(x=x)["g"], expected, scale)


def test_a_slice_with_bounds_computed_at_run_time_keeps_tensorflows_gradient():
    """No constant bounds, no positions to read: TensorFlow's own gradient, which the
    converter then names (as for every rewrite that cannot be lowered)."""

    @tf.function(input_signature=[tf.TensorSpec(SHAPE, tf.float32), tf.TensorSpec([], tf.int32)])
    def gradient(x: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
        with builtin_gradients():
            y = x[:, start:]
        return tf.gradients(tf.reduce_sum(y), x)[0]

    graph = gradient.get_concrete_function().graph
    assert "StridedSliceGrad" in {op.type for op in graph.get_operations()}
