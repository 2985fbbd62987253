"""A token tensor made a feature map inside the graph: after the target op, the graph takes
its patch tokens, reshapes them into the [1, h, w, C] grid, and gives the rest of the network
the tokens back from that grid (prefix tokens concatenated in front). Every op that read the
tokens now reads the copy, so the grid lies on the path to the class score: its gradient is
the tokens' own, folded, and the export's activations and gradients are a feature map as for
any CNN (no second pass, no change to the CAM arithmetic). Slice, Reshape and Concatenation
forward, Pad and Slice backward: all builtins."""

from __future__ import annotations

import tensorflow as tf

SCOPE = "dermcam_fold"
GRID = f"{SCOPE}/grid"


def fold_tokens(
    graph_def: tf.compat.v1.GraphDef,
    op: str,
    prefix: int,
    height: int,
    width: int,
) -> tf.compat.v1.GraphDef:
    """A copy of `graph_def` in which op `op`'s tokens ([1, N, C] or [N, C], N = prefix +
    height·width) also exist as `GRID` ([1, height, width, C]) and reach the network only
    through it."""
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        tokens = graph.get_tensor_by_name(f"{op}:0")
        n, c = int(tokens.shape[-2]), int(tokens.shape[-1])
        if n != prefix + height * width:
            raise ValueError(f"{op}: {n} tokens are not {prefix} + {height}×{width}")
        with tf.name_scope(SCOPE):
            flat = tf.reshape(tokens, [n, c])
            patches = tf.slice(flat, [prefix, 0], [height * width, c])
            grid = tf.reshape(patches, [1, height, width, c], name="grid")
            back = tf.reshape(grid, [height * width, c])
            if prefix:
                back = tf.concat([tf.slice(flat, [0, 0], [prefix, c]), back], 0)
            joined = tf.reshape(back, tokens.shape.as_list(), name="tokens")
    if grid.op.name != GRID:  # the graph had a scope of that name already
        raise ValueError(f"{op}: the grid was named {grid.op.name!r}, not {GRID!r}")
    out = graph.as_graph_def()
    for node in out.node:
        if node.name.startswith(f"{SCOPE}/"):
            continue
        for i, name in enumerate(node.input):
            if name in (op, f"{op}:0"):
                node.input[i] = joined.op.name
    return out
