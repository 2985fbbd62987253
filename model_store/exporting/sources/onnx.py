"""An ONNX file as an export source (a PyTorch model through `torch.onnx.export`): checked,
converted once by onnx2tf into a TensorFlow graph (NHWC), and from there exported like any
SavedModel. Target layers are the ONNX graph's own spatial nodes, named as in the ONNX file;
each is found in the converted graph by its values on a probe image (onnx2tf renames
everything and may add layout transposes, so names cannot be matched). The probabilities are
then checked against onnxruntime running the file itself (`original_parity`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from model_store.exporting.graph.fold import GRID, fold_tokens
from model_store.exporting.sources.onnx_convert import CAUSE
from model_store.exporting.sources.onnx_graph import OnnxGraph, spatial_nodes
from model_store.exporting.sources.onnx_tokens import (
    NORMS,
    Fold,
    token_nodes,
    unfoldable_message,
)
from model_store.exporting.sources.savedmodel import SavedModelSubject

MATCH_ATOL = 1e-3  # relative to the tensor's scale: float32 rounding, not a different tensor


@dataclass
class Target:
    node: str  # the ONNX node's name
    tensor: str  # its output tensor in the ONNX graph
    op: str  # the converted graph's op with the same values (NHWC, or the same tokens)
    fold: Fold | None = None  # a transformer's tokens or channels-last map: how they fold
    op_type: str = ""
    reaches: bool = True  # its patches reach the class score (not only a class token does)
    pre_norm: bool = False  # a block's normalisation (`onnx_tokens._feeds_a_residual`)

    @property
    def key(self) -> str:
        """The candidate's name for the exporter: the op, or its folded grid."""
        return f"{self.op}{FOLDED}" if self.fold and self.fold.layout == "tokens" else self.op


FOLDED = "@grid"


class OnnxSubject(SavedModelSubject):
    """The converted graph, frozen; targets and names from the ONNX file."""

    def __init__(
        self,
        path: str | Path,
        output: str | None = None,
        input_size: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
    ) -> None:
        self.onnx = OnnxGraph.read(Path(path), output, input_size)
        self.prefix_tokens = prefix_tokens
        with tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmp:
            saved = convert(self.onnx, Path(tmp))
            super().__init__(saved)
        self.loader = f"onnx2tf {_onnx2tf_version()} → tensorflow {tf.__version__} (frozen graph)"
        self.loader_name = "onnx"
        self._folded: dict[tuple[str, bool], tf.compat.v1.GraphDef] = {}
        self.targets = self._match_targets()

    # --- targets: ONNX nodes, found in the converted graph by their values -----------------

    def _match_targets(self) -> list[Target]:
        # Shapes from the simplified graph (what onnx2tf converted); values from the file's.
        produced = {out for node in self.onnx.model.graph.node for out in node.output}
        order = {n.output[0]: i for i, n in enumerate(self.onnx.simplified.graph.node) if n.output}
        nodes = [n for n in spatial_nodes(self.onnx.simplified) if n[1] in produced]
        self.token_nodes = [
            t for t in token_nodes(self.onnx.simplified, self.prefix_tokens) if t.tensor in produced
        ]
        foldable = [t for t in self.token_nodes if t.fold]
        if not nodes and not self.token_nodes:
            raise ValueError(
                "the ONNX graph has no spatial feature map ([1, C, h, w], h x w > 1) to explain"
            )
        probe = np.random.default_rng(0).uniform(-1.0, 1.0, (1, self.height, self.width, 3))
        probe = probe.astype(np.float32)
        wanted = self.onnx.run(probe, [t for _, t in nodes] + [t.tensor for t in foldable])
        shapes = {tuple(w.shape[1:]) for w in wanted[len(nodes) :]}
        ops = list(self.shapes) + [op for op, shape in self._token_ops() if shape in shapes]
        found = dict(zip(ops, self._values(probe, ops), strict=True))
        targets = []
        for (node, tensor), value in zip(nodes, wanted[: len(nodes)], strict=True):
            op = _closest(found, np.transpose(value[0], (1, 2, 0)))
            if op:
                targets.append(Target(node, tensor, op))
        for token, value in zip(foldable, wanted[len(nodes) :], strict=True):
            op = _closest(found, value[0])
            if op:
                targets.append(
                    Target(
                        token.node, token.tensor, op, token.fold, token.op_type,
                        pre_norm=token.pre_norm,
                    )
                )  # fmt: skip
        targets.sort(key=lambda t: order.get(t.tensor, 0))
        self._mark_reaching([t for t in targets if t.fold], probe)
        for t in targets:
            if t.fold and t.fold.layout == "tokens":
                self.shapes[t.key] = [t.fold.height, t.fold.width, t.fold.channels]
        return targets

    def _token_ops(self) -> list[tuple[str, tuple[int, ...]]]:
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(self.plain, name="")
        return [
            (op.name, tuple(op.outputs[0].shape[1:]))
            for op in graph.get_operations()
            if op.type not in ("Const", "Identity", "Placeholder")
            and op.outputs
            and op.outputs[0].shape.rank == 3
            and op.outputs[0].shape.is_fully_defined()
        ]

    def _values(self, probe: np.ndarray, ops: list[str]) -> list[np.ndarray]:
        def every_op(x: tf.Tensor) -> list[tf.Tensor]:
            return tf.graph_util.import_graph_def(
                self.plain,
                input_map={self.input_name: x},
                return_elements=[f"{op}:0" for op in ops],
                name="probe",
            )

        run = tf.compat.v1.wrap_function(every_op, [tf.TensorSpec(probe.shape, tf.float32)])
        return [v.numpy()[0] for v in run(tf.constant(probe))]

    def _mark_reaching(self, targets: list[Target], probe: np.ndarray) -> None:
        """Whether each token target's patches reach the class score at all: after a ViT's
        last attention only the class token does (the rest of the sequence is never read),
        so the last layers' patch gradients are exactly zero and explain nothing."""
        if not targets:
            return

        def gradients(x: tf.Tensor) -> list[tf.Tensor]:
            *tensors, z = tf.graph_util.import_graph_def(
                self.plain,
                input_map={self.input_name: x},
                return_elements=[f"{t.op}:0" for t in targets] + [self.z_name],
                name="reach",
            )
            weights = tf.constant(np.random.default_rng(1).normal(size=z.shape[-1]), z.dtype)
            found = tf.gradients(tf.reduce_sum(z * weights), tensors)
            return [
                tf.zeros_like(t) if g is None else g for t, g in zip(tensors, found, strict=True)
            ]

        run = tf.compat.v1.wrap_function(gradients, [tf.TensorSpec(probe.shape, tf.float32)])
        for target, g in zip(targets, run(tf.constant(probe)), strict=True):
            patches = g.numpy()[0]
            if target.fold.layout == "tokens":
                patches = patches.reshape(target.fold.tokens, -1)[target.fold.prefix :]
            target.reaches = bool(np.any(patches != 0))

    def candidates(self, target: str | None) -> list[str]:
        if target:
            return [self._named(target).key]
        spatial = [t.key for t in self.targets[::-1] if not t.fold]
        if not any(len(n.shape) == 3 for n in self.token_nodes):
            return spatial  # a CNN: channels-last layers (ConvNeXt's MLP) only when named
        # A transformer: pytorch-grad-cam's layer, the last block's normalisation whose
        # patches reach the score (ViT, DeiT: blocks[-1].norm1; Swin: blocks[-1].norm2), then
        # other normalisations and token layers; the patch embedding last.
        tokens = [t for t in self.targets[::-1] if t.fold and t.reaches]
        unfolded = [n for n in self.token_nodes if n.fold is None and n.op_type in NORMS]
        if not tokens and unfolded:
            raise ValueError(unfoldable_message(unfolded[-1], self.token_nodes))
        ranked = sorted(tokens, key=lambda t: (not t.pre_norm, t.op_type not in NORMS))
        return [t.key for t in ranked] + spatial

    def _named(self, target: str) -> Target:
        match = next((t for t in self.targets[::-1] if target in (t.node, t.tensor)), None)
        if match is None:
            unfolded = [t for t in self.token_nodes if target in (t.node, t.tensor)]
            if unfolded and unfolded[0].fold is None:
                raise ValueError(unfoldable_message(unfolded[0], self.token_nodes))
            names = ", ".join(t.node for t in self.targets[::-1][:5])
            raise ValueError(f"No spatial ONNX node is named {target!r}; the last ones: {names}")
        if not match.reaches:
            usable = self.candidates(None)
            hint = f", e.g. {self.describe(usable[0])}" if usable else ""
            raise ValueError(
                f"Target layer {match.node}: the class score does not depend on its patch "
                "tokens (only a class token reaches the head after it), so every map would be "
                f"zero; name a layer before the last attention{hint}."
            )
        return match

    def describe(self, name: str) -> str:
        return next((t.node for t in self.targets if t.key == name), name)

    def fold(self, name: str) -> dict | None:
        target = next((t for t in self.targets if t.key == name), None)
        return target.fold.describe() if target and target.fold else None

    def graph(self, name: str, rewritten: bool) -> tuple[tf.compat.v1.GraphDef, str]:
        """A folded target's graph has its grid inserted after the token op (`graph.fold`)."""
        if not name.endswith(FOLDED):
            return super().graph(name, rewritten)
        if (name, rewritten) not in self._folded:
            target = next(t for t in self.targets if t.key == name)
            base = self.rewritten if rewritten else self.plain
            fold = target.fold
            self._folded[name, rewritten] = fold_tokens(
                base, target.op, fold.prefix, fold.height, fold.width
            )
        return self._folded[name, rewritten], f"{GRID}:0"

    # --- the original: onnxruntime on the file itself --------------------------------------

    def original_parity(self, engine, images: list[np.ndarray], preprocessing: str) -> dict:  # noqa: ANN001
        """Probabilities of the served artifacts against onnxruntime's on the same images."""
        from dermcam.keras_engine import preprocess

        diffs, agree = [], []
        for image in images:
            served = engine.predict(image)
            x = preprocess(preprocessing, tf.constant(image)).numpy()
            (logits,) = self.onnx.run(x, [self.onnx.output])
            original = _probabilities(logits[0], self.head.kind)
            diffs.append(float(np.abs(served - original).max()))
            agree.append(int(np.argmax(served)) == int(np.argmax(original)))
        return {
            "images": len(images),
            "max_abs_prob_diff": float(f"{max(diffs):.2g}"),
            "top1_agreement": float(np.mean(agree)),
            "runtime": f"onnxruntime {_onnxruntime_version()}",
        }


def _closest(found: dict[str, np.ndarray], value: np.ndarray) -> str | None:
    """The converted op whose values are `value`'s (float32 rounding apart); of equals (a
    copy, a transpose) the last, the head's."""
    scale = float(np.abs(value).max()) or 1.0
    errors = {
        op: float(np.abs(v - value).max()) for op, v in found.items() if v.shape == value.shape
    }
    close = [op for op, error in errors.items() if error <= MATCH_ATOL * scale]
    return min(reversed(close), key=errors.__getitem__) if close else None


def _probabilities(z: np.ndarray, kind: str) -> np.ndarray:
    if kind == "binary":
        p = 1.0 / (1.0 + np.exp(-z))
        return np.concatenate([1.0 - p, p])
    if kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-z))
    if kind == "softmax":
        return z
    e = np.exp(z - z.max())
    return e / e.sum()


def convert(graph: OnnxGraph, folder: Path) -> Path:
    """The ONNX graph (simplified, Erf in builtins) → a SavedModel in `folder`, by onnx2tf in
    a child process (`onnx_convert`): there oneDNN is off, whose batched MatMul crashes
    TensorFlow 2.21 on ConvNeXt's channel MLPs, a crash costs the child, not the export, and
    a failed first attempt leaves nothing behind for the second. Strict mode first
    (onnx2tf's accuracy corrections around broadcasting ops), then without it, which
    converts graphs strict mode gives up on (ConvNeXt's exact GELU); the parity gates judge
    the result either way."""
    source = folder / "model.onnx"
    graph.save(source, for_conversion=True)
    saved = folder / "saved_model"
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    causes = []
    for strict in ("strict", "lenient"):
        command = [sys.executable, "-m", "model_store.exporting.sources.onnx_convert"]
        command += [str(source), str(saved), str(graph.height), str(graph.width), strict]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode == 0:
            return saved
        if done.returncode < 0:
            causes.append(f"onnx2tf crashed ({signal.Signals(-done.returncode).name})")
        else:
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith(CAUSE)]
            causes.append(lines[-1][len(CAUSE) :] if lines else done.stderr.strip()[-300:])
    raise ValueError(f"onnx2tf could not convert the model: {causes[-1]}")


def _onnx2tf_version() -> str:
    from importlib.metadata import version

    return version("onnx2tf")


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
