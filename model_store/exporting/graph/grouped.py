"""Grouped convolutions with one group per channel, written as the depthwise convolutions they
are. onnx2tf writes PyTorch's depthwise `Conv(group=C)` as a grouped `Conv2D` (filter input
depth 1) when it cannot fuse it otherwise (ShuffleNetV2's depthwise convolutions, which no
activation follows). TensorFlow's CPU kernels have no gradient for grouped convolutions
("Gradients for grouped convolutions are not supported on CPU"), so the parity reference could
not run; `DepthwiseConv2dNative` is the same arithmetic, has TensorFlow's gradient and
dermcam's builtin one (`gradients._depthwise_grad`), and converts to DEPTHWISE_CONV_2D."""

from __future__ import annotations

import tensorflow as tf

# Conv2D attributes DepthwiseConv2dNative has too (it has no use_cudnn_on_gpu).
_KEPT = ("T", "strides", "padding", "explicit_paddings", "data_format", "dilations")


def grouped_as_depthwise(graph_def: tf.compat.v1.GraphDef) -> tf.compat.v1.GraphDef:
    """A copy of `graph_def` with every one-group-per-channel Conv2D made depthwise, its
    filter [kh, kw, 1, C·m] reshaped to [kh, kw, C, m] (output channel c·m + j of group c is
    depthwise filter (c, j): the same index, row-major)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    grouped = {}
    for op in graph.get_operations():
        if op.type != "Conv2D" or op.get_attr("data_format") != b"NHWC":
            continue
        channels, kernel = op.inputs[0].shape[-1], op.inputs[1].shape
        if channels is None or not kernel.is_fully_defined() or kernel[2] != 1 or channels == 1:
            continue
        if kernel[3] % channels == 0:
            grouped[op.name] = [kernel[0], kernel[1], channels, kernel[3] // channels]
    if not grouped:
        return graph_def
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    added = []
    for node in out.node:
        if node.name not in grouped:
            continue
        shape = tf.compat.v1.NodeDef(name=f"{node.name}/depthwise_shape", op="Const")
        shape.attr["dtype"].type = tf.int32.as_datatype_enum
        shape.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(grouped[node.name], tf.int32))
        reshape = tf.compat.v1.NodeDef(name=f"{node.name}/depthwise_filter", op="Reshape")
        reshape.input.extend([node.input[1], shape.name])
        reshape.attr["T"].CopyFrom(node.attr["T"])
        reshape.attr["Tshape"].type = tf.int32.as_datatype_enum
        node.op = "DepthwiseConv2dNative"
        node.input[1] = reshape.name
        for key in [k for k in node.attr if k not in _KEPT]:
            del node.attr[key]
        added += [shape, reshape]
    out.node.extend(added)
    return out
