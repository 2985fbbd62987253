"""The attention artifact of a vision transformer: what attention rollout (Abnar & Zuidema
2020) and its gradient-weighted form (Chefer et al. 2021) need, computed in one LiteRT graph
so the rollout itself is a few [N, N] matrix products in NumPy (`dermcam.rollout`).

For every global self-attention (a Softmax of shape [1, heads, N, N] over the N tokens the
target's fold has), the graph returns its head mean A and the head mean of relu(dS/dA ⊙ A),
Chefer's Ā. And the readout: |dS/dtokens| of the last token layer, summed over channels,
which says which tokens the head reads (a class token, a distillation token too, or every
patch under global pooling), so the rollout starts from the model's own readout rather than
assuming a class token. Windowed attention (Swin) has no [N, N] over the image: no artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from dermcam.keras_engine import class_score, preprocess
from dermcam.keras_forward import head_outputs
from model_store.exporting.graph.gradients import builtin_gradients

PARITY_IMAGES = 2
MAX_ATTENTION_DIFF = 1e-4  # vs onnxruntime, 0-1 values: float32 through the blocks
MIN_ROLLOUT_R = 0.99  # vs TensorFlow, as the Grad-CAM gate holds its maps


@dataclass(frozen=True)
class AttentionLayout:
    softmaxes: tuple[str, ...]  # the converted graph's attention ops, input to output
    heads: int
    tokens: int
    readout: str  # the last token layer's op
    readout_layer: str  # its ONNX node
    prefix: int
    grid: tuple[int, int]

    def describe(self) -> dict:
        return {
            "layers": [_readable(op) for op in self.softmaxes],
            "heads": self.heads,
            "tokens": self.tokens,
            "prefix_tokens": self.prefix,
            "grid": list(self.grid),
            "readout_layer": self.readout_layer,
        }


def _readable(op: str) -> str:
    """onnx2tf keeps the ONNX node's name after a '//' in its op names."""
    return "/" + op.split("//", 1)[1] if "//" in op else op


def find_attention(subject) -> tuple[AttentionLayout | None, str]:  # noqa: ANN001 - a Subject
    """The subject's global self-attention, or None and why there is none."""
    tokens = [t for t in getattr(subject, "targets", []) if t.fold and t.fold.layout == "tokens"]
    if not tokens:
        return None, "the model has no token layers"
    last = tokens[-1]
    fold = last.fold
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(subject.plain, name="")
    square = [
        op
        for op in graph.get_operations()
        if op.type == "Softmax"
        and op.outputs[0].shape.rank == 4
        and op.outputs[0].shape.is_fully_defined()
        and op.outputs[0].shape[2] == op.outputs[0].shape[3]
    ]
    glob = [
        op for op in square if op.outputs[0].shape[0] == 1 and op.outputs[0].shape[3] == fold.tokens
    ]
    if not glob or len(glob) != len(square):  # Swin: windows, and stages of other sizes
        kind = "windowed attention" if square else "no attention softmax"
        return None, f"{kind}: rollout needs every attention global over the same tokens"
    heads = {int(op.outputs[0].shape[1]) for op in glob}
    layout = AttentionLayout(
        softmaxes=tuple(op.name for op in glob),
        heads=max(heads),
        tokens=fold.tokens,
        readout=last.op,
        readout_layer=last.node,
        prefix=fold.prefix,
        grid=(fold.height, fold.width),
    )
    return layout, ""


def attention_function(
    subject,  # noqa: ANN001 - a graph subject (OnnxSubject)
    layout: AttentionLayout,
    mode: str,
    score: str,
) -> tf.types.experimental.ConcreteFunction:
    """`image`, `target` (one-hot) → probabilities, attention [1, L, N, N] (head means),
    relevance [1, L, N, N] (head means of relu(dS/dA ⊙ A)) and readout [1, N]."""
    image = tf.TensorSpec([1, subject.height, subject.width, 3], tf.float32, name="image")
    target = tf.TensorSpec([1, subject.classes], tf.float32, name="target")
    wanted = [f"{op}:0" for op in layout.softmaxes] + [f"{layout.readout}:0", subject.z_name]

    @tf.function(input_signature=[image, target])
    def attention(image: tf.Tensor, target: tf.Tensor) -> dict[str, tf.Tensor]:
        with builtin_gradients():
            *maps, tokens, z = tf.graph_util.import_graph_def(
                subject.rewritten,
                input_map={subject.input_name: preprocess(mode, image)},
                return_elements=wanted,
                name="model",
            )
            logits, probs = head_outputs(subject.head.kind, z)
            value = class_score(logits, probs, target, score)
        *grads, readout = tf.gradients(value, [*maps, tokens])
        grads = [tf.zeros_like(a) if g is None else g for a, g in zip(maps, grads, strict=True)]
        if readout is None:
            readout = tf.zeros_like(tokens)
        return {
            "probabilities": probs,
            "attention": tf.stack([tf.reduce_mean(a, axis=1) for a in maps], axis=1),
            "relevance": tf.stack(
                [
                    tf.reduce_mean(tf.nn.relu(g * a), axis=1)
                    for a, g in zip(maps, grads, strict=True)
                ],
                axis=1,
            ),
            "readout": tf.reduce_sum(tf.abs(tf.reshape(readout, [1, layout.tokens, -1])), -1),
        }

    return attention.get_concrete_function()


def parity(concrete, layout: AttentionLayout, engine, subject, mode: str) -> dict:  # noqa: ANN001
    """The artifact on the exporter's parity images (generated lesions) against the
    original file's attention in onnxruntime (head means, absolute: they are 0-1), and both
    rollouts against the TensorFlow function it came from (Pearson r of the maps: the
    gradients run through every block, where TensorFlow's oneDNN kernels round otherwise
    than LiteRT's, and a sharp softmax magnifies it)."""
    from dermcam import rollout
    from dermcam.engine import Attention
    from model_store.exporting.parity import pearson
    from model_store.synthetic import dataset

    h, w = engine.manifest.height, engine.manifest.width
    classes = len(engine.manifest.labels)
    images, _, _ = dataset(2024, PARITY_IMAGES, max(h, w))
    onnx = getattr(subject, "onnx", None)
    outputs = {n.name: n.output[0] for n in onnx.model.graph.node} if onnx else {}
    tensors = [outputs.get(_readable(op)) for op in layout.softmaxes]
    original, r_min = [], 1.0
    for i, image in enumerate(images):
        x = image[None, :h, :w, :].astype(np.float32)
        k = i % classes
        served = engine.attend(x, k)
        hot = np.zeros((1, classes), np.float32)
        hot[0, k] = 1.0
        ref = {n: v.numpy()[0] for n, v in concrete(image=tf.constant(x), target=hot).items()}
        expected = Attention(
            ref["probabilities"], ref["attention"], ref["relevance"], ref["readout"]
        )
        for method in rollout.ROLLOUTS:
            maps = [
                rollout.read_out(
                    (rollout.attention_rollout(a.attention) if method == "rollout"
                     else rollout.gradient_rollout(a.relevance)),
                    a.readout, layout.prefix, layout.grid,
                )
                for a in (expected, served)
            ]  # fmt: skip
            r_min = min(r_min, pearson(*maps))
        if onnx is not None and None not in tensors:
            pre = preprocess(mode, tf.constant(x)).numpy()
            for layer, theirs in enumerate(onnx.run(pre, tensors)):
                original.append(float(np.abs(theirs[0].mean(0) - served.attention[layer]).max()))
    figures = {"images": PARITY_IMAGES, "rollout_pearson_min": float(f"{r_min:.8f}")}
    if original:
        figures["max_attention_diff_vs_original"] = float(f"{max(original):.2g}")
    return figures


def passes(figures: dict) -> bool:
    original = figures.get("max_attention_diff_vs_original", 0.0)
    return original <= MAX_ATTENTION_DIFF and figures["rollout_pearson_min"] >= MIN_ROLLOUT_R


def write_artifact(
    subject,  # noqa: ANN001 - a Subject
    path,  # noqa: ANN001 - the staging folder's attention.tflite
    mode: str,
    score: str,
    quantization: str,
    log,  # noqa: ANN001 - print-like
) -> tuple[tf.types.experimental.ConcreteFunction, AttentionLayout] | None:
    """attention.tflite for a transformer with global self-attention, with the function it
    came from and its layout; None, said in the log, for any other model. An attention the
    builtins cannot convert costs the rollout, never the export."""
    from model_store.exporting.graph.convert import FlexOpsRequired, to_tflite

    layout, why = find_attention(subject)
    if layout is None:
        if getattr(subject, "token_nodes", None):
            log(f"attention rollout: not exported ({why})")
        return None
    concrete = attention_function(subject, layout, mode, score)
    try:
        path.write_bytes(to_tflite(concrete, [], quantization))
    except FlexOpsRequired as exc:
        log(f"attention rollout: not exported (its gradient needs {', '.join(exc.ops)})")
        return None
    log(
        f"attention rollout: {len(layout.softmaxes)} layers × {layout.heads} heads over "
        f"{layout.tokens} tokens, read out at {layout.readout_layer}"
    )
    return concrete, layout
