"""A vision transformer's targets in an ONNX graph: token tensors [1, N, C] (ViT, DeiT,
register variants, Hugging Face ViT) and channels-last maps [1, h, w, C] (Swin's stages), each
with how it folds into the [h, w, C] grid Grad-CAM weighs, as pytorch-grad-cam's
`reshape_transform` does: the prefix tokens (class, distillation, registers) dropped, the
patches laid out row by row.

The grid and the prefix are read from the model, not guessed: the grid is one the graph itself
has (the patch embedding's [1, C, h, w] output, or a channels-last [1, h, w, C] map of the
same width), the prefix is the rest, N − h·w. `--prefix-tokens` overrides it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from model_store.exporting.sources.onnx_graph import LAYOUT_OPS, spatial_nodes, tensor_shapes

MAX_PREFIX = 16  # class + distillation + registers in the models published (DeiT 2, reg4 5)
NORMS = {"LayerNormalization", "RMSNormalization"}  # over the last axis: channels last


@dataclass(frozen=True)
class Fold:
    """How one target's tensor becomes the [h, w, C] grid."""

    layout: str  # "tokens" ([1, N, C]) or "channels_last" ([1, h, w, C])
    prefix: int  # tokens before the patches, dropped
    height: int
    width: int
    channels: int

    @property
    def tokens(self) -> int:
        return self.prefix + self.height * self.width

    def describe(self) -> dict:
        return {
            "layout": self.layout,
            "prefix_tokens": self.prefix,
            "grid": [self.height, self.width],
        }


@dataclass(frozen=True)
class TokenNode:
    node: str  # the ONNX node's name
    tensor: str  # its output tensor
    op_type: str
    shape: tuple[int, ...]  # the tensor's shape, batch included
    fold: Fold | None  # None: no grid of the model fits its tokens
    pre_norm: bool = False  # a block's normalisation: x + f(norm(x)) follows


def token_nodes(model, prefix_tokens: int | None = None) -> list[TokenNode]:  # noqa: ANN001
    """Every node with a token output [1, N, C] (N > 1) or a channels-last normalisation
    [1, h, w, C], in graph order, each with its fold (or None when none fits)."""
    shapes = tensor_shapes(model)
    grids = _grids(model, shapes)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.op_type in LAYOUT_OPS or not node.output:
            continue
        dims = shapes.get(node.output[0]) or []
        if None in dims or not dims or dims[0] != 1:
            continue
        name = node.name or node.output[0]
        if len(dims) == 3 and dims[1] > 1:
            fold = _fold_tokens(dims[1], dims[2], grids, prefix_tokens)
        elif len(dims) == 4 and node.op_type in NORMS and _last_axis(node) and dims[1] > 1:
            fold = Fold("channels_last", 0, dims[1], dims[2], dims[3])
        else:
            continue
        pre_norm = node.op_type in NORMS and _feeds_a_residual(node, consumers)
        found.append(TokenNode(name, node.output[0], node.op_type, tuple(dims), fold, pre_norm))
    return found


def _feeds_a_residual(norm, consumers: dict[str, list], reach: int = 400) -> bool:  # noqa: ANN001
    """Whether a normalisation opens a pre-norm block: its output, through attention or an
    MLP, is added back onto its own input (x + f(norm(x))). The last one whose patches reach
    the score is the layer pytorch-grad-cam's docs name (ViT: blocks[-1].norm1; Swin:
    blocks[-1].norm2); a model's final norm is not one."""
    x, seen, frontier = norm.input[0], {norm.output[0]}, [norm.output[0]]
    while frontier and len(seen) < reach:
        for node in consumers.get(frontier.pop(0), []):
            if node.op_type == "Add" and x in node.input and any(i in seen for i in node.input):
                return True
            for out in node.output:
                if out not in seen:
                    seen.add(out)
                    frontier.append(out)
    return False


def _last_axis(node) -> bool:  # noqa: ANN001
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis in (-1, 3)


def _grids(model, shapes: dict) -> list[tuple[int, int, int]]:  # noqa: ANN001
    """(h, w, C) of the model's own maps: NCHW feature maps (a patch embedding's output) and
    channels-last [1, h, w, C] tensors (Swin's stages)."""
    grids = set()
    for _, tensor in spatial_nodes(model):
        _, c, h, w = shapes[tensor]
        grids.add((h, w, c))
    for dims in shapes.values():
        if len(dims) == 4 and None not in dims and dims[0] == 1 and dims[1] * dims[2] > 1:
            grids.add((dims[1], dims[2], dims[3]))
    return sorted(grids)


def _fold_tokens(
    n: int, c: int, grids: list[tuple[int, int, int]], prefix_tokens: int | None
) -> Fold | None:
    if prefix_tokens is not None:
        patches = n - prefix_tokens
        if patches < 2:
            return None
        fits = [(h, w) for h, w, _ in grids if h * w == patches]
        side = math.isqrt(patches)
        if not fits and side * side == patches:
            fits = [(side, side)]
        return Fold("tokens", prefix_tokens, *fits[0], c) if fits else None
    fits = sorted(
        (n - h * w, ch != c, h, w)  # fewest prefix tokens; of equals, a grid of the same width
        for h, w, ch in grids
        if 0 <= n - h * w <= MAX_PREFIX and n - h * w < h * w
    )
    if not fits:
        return None
    prefix, _, h, w = fits[0]
    return Fold("tokens", prefix, h, w, c)


def unfoldable_message(node: TokenNode, grids_seen: list[TokenNode]) -> str:
    """Why a token target cannot be explained, and what to pass."""
    folds = sorted({f"{t.fold.height}×{t.fold.width}" for t in grids_seen if t.fold})
    known = f" (the grids its other token layers fold into: {', '.join(folds)})" if folds else ""
    return (
        f"Target layer {node.node}: its {node.shape[1]} tokens of {node.shape[2]} channels do "
        f"not fold into a grid of the model{known}. Pass --prefix-tokens K (the number of "
        "tokens before the patches, e.g. 1 for a class token) so that the rest form a grid, or "
        "name another layer with --target-layer."
    )
