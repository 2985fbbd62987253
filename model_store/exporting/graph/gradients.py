"""Builtin-only gradients for the Grad-CAM export.

The LiteRT wheel has no Flex delegate, and TensorFlow's backward ops for ReLU, ReLU6,
LeakyReLU, ELU, depthwise convolutions, pooling, tf_keras' fused batch norm and strided
slices (ReluGrad, Relu6Grad, LeakyReluGrad, EluGrad, DepthwiseConv2dNativeBackpropInput,
AvgPoolGrad, MaxPoolGrad, FusedBatchNormGradV3, StridedSliceGrad) are Flex-only. These
replacements are written in ops that lower to TFLite builtins. `tf.GradientTape` ignores
gradient_override_map, so the export takes gradients with `tf.gradients()` inside a
`tf.function`, under `builtin_gradients()`. Still Flex-only, and named by the exporter when
a target needs them: LRNGrad, ResizeBilinearGrad, and the Erfc that exact GELU's gradient
reuses.
Adopted from the measured sketch in ../shared/reference/builtin_gradients.py.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# The only private reach: TF's own depthwise gradient, kept for cases we cannot lower.
from tensorflow.python.framework import ops as _tf_ops

_DEFAULT_DEPTHWISE_GRAD = _tf_ops._gradient_registry.lookup("DepthwiseConv2dNative")
_DEFAULT_AVG_POOL_GRAD = _tf_ops._gradient_registry.lookup("AvgPool")
_DEFAULT_MAX_POOL_GRAD = _tf_ops._gradient_registry.lookup("MaxPool")
_DEFAULT_STRIDED_SLICE_GRAD = _tf_ops._gradient_registry.lookup("StridedSlice")
_DEFAULT_FUSED_BN_GRAD = {
    name: _tf_ops._gradient_registry.lookup(name)
    for name in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
}


def _relu_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    return dy * tf.cast(op.outputs[0] > 0, dy.dtype)


def _relu6_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    y = op.outputs[0]
    return dy * tf.cast(tf.logical_and(y > 0, y < 6), dy.dtype)


def _leaky_relu_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    return tf.where(op.inputs[0] > 0, dy, dy * op.get_attr("alpha"))


def _elu_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    y = op.outputs[0]  # elu'(x) = 1 for x > 0, else exp(x) = y + 1
    return tf.where(y > 0, dy, dy * (y + 1.0))


def _fused_batch_norm_grad(op: tf.Operation, *grads: tf.Tensor) -> list:
    """Inference-mode batch norm (tf_keras' layers): y = (x - mean) · scale / sqrt(var + eps)
    + offset, so dy/dx is a per-channel constant. Training mode keeps TensorFlow's own."""
    if op.get_attr("is_training") or op.get_attr("data_format").decode() != "NHWC":
        return _DEFAULT_FUSED_BN_GRAD[op.type](op, *grads)
    _, scale, _, _, variance = op.inputs
    factor = scale * tf.math.rsqrt(variance + op.get_attr("epsilon"))
    return [grads[0] * tf.cast(factor, grads[0].dtype)] + [None] * (len(op.inputs) - 1)


def _geometry(
    in_hw: tuple[int, int], out_hw: tuple[int, int], k: tuple[int, int], s: int, padding: str
) -> tuple[int, int, int, int]:
    """(top, left, padded_h, padded_w) of a window op, as TensorFlow pads for SAME."""
    (height, width), (oh, ow), (kh, kw) = in_hw, out_hw, k
    if padding == "VALID":
        return 0, 0, height, width
    pad_h = max((oh - 1) * s + kh - height, 0)
    pad_w = max((ow - 1) * s + kw - width, 0)
    return pad_h // 2, pad_w // 2, height + pad_h, width + pad_w


def _zero_insert(dy: tf.Tensor, s: int) -> tf.Tensor:
    """Gradient pixels s apart, zeros between (DEPTH_TO_SPACE of [dy, 0, 0, ...])."""
    if s == 1:
        return dy
    oh, ow = int(dy.shape[1]), int(dy.shape[2])
    zeros = tf.zeros_like(dy)
    d = tf.nn.depth_to_space(tf.concat([dy] + [zeros] * (s * s - 1), axis=-1), s)
    return d[:, : (oh - 1) * s + 1, : (ow - 1) * s + 1, :]


def _spread(
    dy: tf.Tensor, kernel: tf.Tensor, s: int, in_hw: tuple[int, int], padding: str
) -> tf.Tensor:
    """Input gradient of a depthwise window op with `kernel` [kh, kw, C, 1]: a forward
    depthwise conv of the zero-inserted, padded upstream gradient with the spatially
    reversed kernel, then cropped to the input."""
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    oh, ow = int(dy.shape[1]), int(dy.shape[2])
    top, left, padded_h, padded_w = _geometry(in_hw, (oh, ow), (kh, kw), s, padding)
    rest_h = padded_h - ((oh - 1) * s + kh)
    rest_w = padded_w - ((ow - 1) * s + kw)
    d = tf.pad(
        _zero_insert(dy, s), [[0, 0], [kh - 1, kh - 1 + rest_h], [kw - 1, kw - 1 + rest_w], [0, 0]]
    )
    gx = tf.nn.depthwise_conv2d(d, tf.reverse(kernel, [0, 1]), [1, 1, 1, 1], "VALID")
    return gx[:, top : top + in_hw[0], left : left + in_hw[1], :]


def _lowerable(op: tf.Operation, x: tf.Tensor, strides: list[int]) -> bool:
    padding = op.get_attr("padding").decode()
    return (
        op.get_attr("data_format").decode() == "NHWC"
        and padding in ("SAME", "VALID")
        and strides[1] == strides[2]
        and x.shape[1:].is_fully_defined()
    )


def _depthwise_grad(op: tf.Operation, dy: tf.Tensor) -> tuple[tf.Tensor, None]:
    """Input gradient of a depthwise conv (`_spread` per depth multiplier). The kernel
    gradient is not needed for Grad-CAM."""
    x, w = op.inputs
    strides = list(op.get_attr("strides"))
    if (
        not _lowerable(op, x, strides)
        or list(op.get_attr("dilations")) != [1, 1, 1, 1]
        or not w.shape.is_fully_defined()
    ):
        return _DEFAULT_DEPTHWISE_GRAD(op, dy)  # not lowerable: the converter will name it
    in_hw = (int(x.shape[1]), int(x.shape[2]))
    padding = op.get_attr("padding").decode()
    channels, multiplier = int(w.shape[2]), int(w.shape[3])
    if multiplier == 1:
        return _spread(dy, w, strides[1], in_hw, padding), None
    shape = tf.shape(dy)
    dy5 = tf.reshape(dy, tf.concat([shape[:3], [channels, multiplier]], 0))
    parts = [
        _spread(dy5[..., j], w[:, :, :, j : j + 1], strides[1], in_hw, padding)
        for j in range(multiplier)
    ]
    return tf.add_n(parts), None


def _pool_window(op: tf.Operation) -> tuple[int, int, int]:
    ksize, strides = list(op.get_attr("ksize")), list(op.get_attr("strides"))
    return int(ksize[1]), int(ksize[2]), int(strides[1])


def _avg_pool_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    """AvgPoolGrad: each output's gradient shared equally by the inputs of its window (SAME
    windows at the border count only the inputs they cover, as TensorFlow averages)."""
    x = op.inputs[0]
    if not _lowerable(op, x, list(op.get_attr("strides"))):
        return _DEFAULT_AVG_POOL_GRAD(op, dy)
    kh, kw, s = _pool_window(op)
    in_hw = (int(x.shape[1]), int(x.shape[2]))
    oh, ow = int(dy.shape[1]), int(dy.shape[2])
    padding = op.get_attr("padding").decode()
    top, left, _, _ = _geometry(in_hw, (oh, ow), (kh, kw), s, padding)

    def covered(count: int, start: int, k: int, size: int) -> np.ndarray:
        first = np.arange(count) * s - start
        return np.minimum(first + k, size) - np.maximum(first, 0)

    counts = np.outer(covered(oh, top, kh, in_hw[0]), covered(ow, left, kw, in_hw[1]))
    share = dy / tf.constant(counts[None, :, :, None], dy.dtype)
    ones = tf.ones([kh, kw, int(x.shape[3]), 1], dy.dtype)
    return _spread(share, ones, s, in_hw, padding)


def _max_pool_grad(op: tf.Operation, dy: tf.Tensor) -> tf.Tensor:
    """MaxPoolGrad: each output's gradient goes to the first input of its window (in row-major
    order) that equals the maximum, as TensorFlow routes ties."""
    x, y = op.inputs[0], op.outputs[0]
    if not _lowerable(op, x, list(op.get_attr("strides"))):
        return _DEFAULT_MAX_POOL_GRAD(op, dy)
    kh, kw, s = _pool_window(op)
    height, width = int(x.shape[1]), int(x.shape[2])
    oh, ow = int(dy.shape[1]), int(dy.shape[2])
    padding = op.get_attr("padding").decode()
    top, left, padded_h, padded_w = _geometry((height, width), (oh, ow), (kh, kw), s, padding)
    lowest = float(np.finfo(x.dtype.as_numpy_dtype).min)
    padding_hw = [[0, 0], [top, padded_h - height - top], [left, padded_w - width - left], [0, 0]]
    x_padded = tf.pad(x, padding_hw, constant_values=lowest)
    spread_h, spread_w = (oh - 1) * s + 1, (ow - 1) * s + 1
    taken = tf.zeros_like(y, dtype=tf.bool)
    parts = []
    for di in range(kh):
        for dj in range(kw):
            window = x_padded[:, di : di + spread_h : s, dj : dj + spread_w : s, :]
            equal = tf.equal(window, y)
            first = tf.logical_and(equal, tf.logical_not(taken))
            taken = tf.logical_or(taken, equal)
            placed = tf.pad(
                _zero_insert(dy * tf.cast(first, dy.dtype), s),
                [[0, 0], [di, padded_h - di - spread_h], [dj, padded_w - dj - spread_w], [0, 0]],
            )
            parts.append(placed)
    return tf.add_n(parts)[:, top : top + height, left : left + width, :]


def _strided_slice_grad(op: tf.Operation, dy: tf.Tensor) -> tuple[tf.Tensor, None, None, None]:
    """StridedSliceGrad (Flex-only): what onnx2tf writes for every ONNX Slice and for equal
    Splits (ShuffleNet's channel split, a ViT's qkv unbind and its class-token slice). With a
    static input shape and constant bounds, TensorFlow's own slicing of the positions 0..n-1
    says where each of dy's values came from, whatever the masks and strides; dy goes back
    there with `_placed`."""
    x = op.inputs[0]
    bounds = [tf.get_static_value(t) for t in op.inputs[1:4]]
    if not x.shape.is_fully_defined() or any(b is None for b in bounds):
        return _DEFAULT_STRIDED_SLICE_GRAD(op, dy)  # not lowerable: the converter will name it
    shape = [int(d) for d in x.shape]
    masks = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")
    with tf.init_scope():  # eagerly, at export: a constant, not a graph op
        positions = tf.strided_slice(
            np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape),
            *bounds,
            **{mask: op.get_attr(mask) for mask in masks},
        )
        positions = positions.numpy().ravel()
    return _placed(dy, positions, shape), None, None, None


def _placed(dy: tf.Tensor, positions: np.ndarray, shape: list[int]) -> tf.Tensor:
    """A tensor of `shape`, dy's values (in order) at the flat `positions`, zeros elsewhere.
    A slice with unit strides is a box: its gradient is dy padded (one PAD, as TensorFlow's
    own Slice gradient). Any other (strides, reversal) is a GATHER from dy with one zero
    appended, by a constant index; SCATTER_ND would do the same but is rarer in runtimes."""
    if positions.size == 0:
        return tf.zeros(shape, dy.dtype)
    index = np.unravel_index(positions, shape)
    low, high = [int(i.min()) for i in index], [int(i.max()) + 1 for i in index]
    box = np.arange(int(np.prod(shape))).reshape(shape)[tuple(map(slice, low, high))]
    if np.array_equal(positions, box.ravel()):
        pads = [[lo, size - hi] for lo, hi, size in zip(low, high, shape, strict=True)]
        return tf.pad(tf.reshape(dy, box.shape), pads)
    source = np.full(int(np.prod(shape)), positions.size, np.int32)
    source[positions] = np.arange(positions.size, dtype=np.int32)
    values = tf.concat([tf.reshape(dy, [-1]), tf.zeros([1], dy.dtype)], 0)
    return tf.reshape(tf.gather(values, tf.constant(source)), shape)


_REWRITES = {
    "Relu": ("DermcamReluGrad", _relu_grad),
    "Relu6": ("DermcamRelu6Grad", _relu6_grad),
    "LeakyRelu": ("DermcamLeakyReluGrad", _leaky_relu_grad),
    "Elu": ("DermcamEluGrad", _elu_grad),
    "FusedBatchNorm": ("DermcamFusedBatchNormGrad", _fused_batch_norm_grad),
    "FusedBatchNormV2": ("DermcamFusedBatchNormGrad", _fused_batch_norm_grad),
    "FusedBatchNormV3": ("DermcamFusedBatchNormGrad", _fused_batch_norm_grad),
    "DepthwiseConv2dNative": ("DermcamDepthwiseGrad", _depthwise_grad),
    "AvgPool": ("DermcamAvgPoolGrad", _avg_pool_grad),
    "MaxPool": ("DermcamMaxPoolGrad", _max_pool_grad),
    "StridedSlice": ("DermcamStridedSliceGrad", _strided_slice_grad),
}
for _name, _fn in dict(_REWRITES.values()).items():
    try:
        tf.RegisterGradient(_name)(_fn)
    except KeyError:  # already registered (module reloaded)
        pass
OVERRIDES = {op_type: name for op_type, (name, _) in _REWRITES.items()}


def builtin_gradients():  # noqa: ANN201 - a TF context manager
    """Enter inside a tf.function body around the forward computation."""
    return tf.compat.v1.get_default_graph().gradient_override_map(OVERRIDES)
