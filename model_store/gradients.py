"""Builtin-only gradients for the Grad-CAM export.

The LiteRT wheel has no Flex delegate, and TensorFlow's backward ops for ReLU, ReLU6,
LeakyReLU and depthwise convolutions (ReluGrad, Relu6Grad, LeakyReluGrad,
DepthwiseConv2dNativeBackpropInput) are Flex-only. These replacements are written in ops
that lower to TFLite builtins. `tf.GradientTape` ignores gradient_override_map, so the export
takes gradients with `tf.gradients()` inside a `tf.function`, under `builtin_gradients()`.
Adopted from the measured sketch in ../shared/reference/builtin_gradients.py.
"""

from __future__ import annotations

import tensorflow as tf

# The only private reach: TF's own depthwise gradient, kept for cases we cannot lower.
from tensorflow.python.framework import ops as _tf_ops

_DEFAULT_DEPTHWISE_GRAD = _tf_ops._gradient_registry.lookup("DepthwiseConv2dNative")


def _relu_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    return dy * tf.cast(op.outputs[0] > 0, dy.dtype)


def _relu6_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    y = op.outputs[0]
    return dy * tf.cast(tf.logical_and(y > 0, y < 6), dy.dtype)


def _leaky_relu_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    return tf.where(op.inputs[0] > 0, dy, dy * op.get_attr("alpha"))


def _depthwise_grad(op: tf.Operation, dy: tf.Tensor) -> tuple[tf.Tensor, None]:
    """Input gradient of a depthwise conv as a forward depthwise conv of the zero-inserted,
    padded upstream gradient with the spatially reversed kernel, then cropped. The kernel
    gradient is not needed for Grad-CAM."""
    x, w = op.inputs
    strides = list(op.get_attr("strides"))
    dilations = list(op.get_attr("dilations"))
    padding = op.get_attr("padding").decode()
    data_format = op.get_attr("data_format").decode()
    if (
        data_format != "NHWC"
        or dilations != [1, 1, 1, 1]
        or padding not in ("SAME", "VALID")
        or strides[1] != strides[2]
        or not x.shape[1:].is_fully_defined()
        or not w.shape.is_fully_defined()
    ):
        return _DEFAULT_DEPTHWISE_GRAD(op, dy)  # not lowerable: the converter will name it
    s = strides[1]
    height, width = int(x.shape[1]), int(x.shape[2])
    kh, kw, channels, multiplier = (int(v) for v in w.shape)
    oh, ow = int(dy.shape[1]), int(dy.shape[2])
    if padding == "SAME":
        pad_h = max((oh - 1) * s + kh - height, 0)
        pad_w = max((ow - 1) * s + kw - width, 0)
        top, left = pad_h // 2, pad_w // 2
        padded_h, padded_w = height + pad_h, width + pad_w
    else:
        top = left = 0
        padded_h, padded_w = height, width
    d = dy
    if s > 1:  # zero insertion between gradient pixels, via DEPTH_TO_SPACE
        zeros = tf.zeros_like(dy)
        d = tf.nn.depth_to_space(tf.concat([dy] + [zeros] * (s * s - 1), axis=-1), s)
        d = d[:, : (oh - 1) * s + 1, : (ow - 1) * s + 1, :]
    rest_h = padded_h - ((oh - 1) * s + kh)
    rest_w = padded_w - ((ow - 1) * s + kw)
    d = tf.pad(d, [[0, 0], [kh - 1, kh - 1 + rest_h], [kw - 1, kw - 1 + rest_w], [0, 0]])
    flipped = tf.reverse(w, [0, 1])
    if multiplier == 1:
        gx = tf.nn.depthwise_conv2d(d, flipped, [1, 1, 1, 1], "VALID")
    else:
        shape = tf.shape(d)
        d5 = tf.reshape(d, tf.concat([shape[:3], [channels, multiplier]], 0))
        gx = tf.add_n(
            [
                tf.nn.depthwise_conv2d(
                    d5[..., j], flipped[:, :, :, j : j + 1], [1, 1, 1, 1], "VALID"
                )
                for j in range(multiplier)
            ]
        )
    return gx[:, top : top + height, left : left + width, :], None


_REWRITES = {
    "Relu": ("DermcamReluGrad", _relu_grad),
    "Relu6": ("DermcamRelu6Grad", _relu6_grad),
    "LeakyRelu": ("DermcamLeakyReluGrad", _leaky_relu_grad),
    "DepthwiseConv2dNative": ("DermcamDepthwiseGrad", _depthwise_grad),
}
for _name, _fn in _REWRITES.values():
    try:
        tf.RegisterGradient(_name)(_fn)
    except KeyError:  # already registered (module reloaded)
        pass
OVERRIDES = {op_type: name for op_type, (name, _) in _REWRITES.items()}


def builtin_gradients():  # noqa: ANN201 - a TF context manager
    """Enter inside a tf.function body around the forward computation."""
    return tf.compat.v1.get_default_graph().gradient_override_map(OVERRIDES)
