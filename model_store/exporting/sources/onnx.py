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

from model_store.exporting.sources.onnx_convert import CAUSE
from model_store.exporting.sources.onnx_graph import OnnxGraph, spatial_nodes
from model_store.exporting.sources.savedmodel import SavedModelSubject

MATCH_ATOL = 1e-3  # relative to the tensor's scale: float32 rounding, not a different tensor


@dataclass
class Target:
    node: str  # the ONNX node's name
    tensor: str  # its output tensor in the ONNX graph
    op: str  # the converted graph's op with the same values (NHWC)


class OnnxSubject(SavedModelSubject):
    """The converted graph, frozen; targets and names from the ONNX file."""

    def __init__(
        self,
        path: str | Path,
        output: str | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        self.onnx = OnnxGraph.read(Path(path), output, input_size)
        with tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmp:
            saved = convert(self.onnx, Path(tmp))
            super().__init__(saved)
        self.loader = f"onnx2tf {_onnx2tf_version()} → tensorflow {tf.__version__} (frozen graph)"
        self.loader_name = "onnx"
        self.targets = self._match_targets()

    # --- targets: ONNX nodes, found in the converted graph by their values -----------------

    def _match_targets(self) -> list[Target]:
        # Shapes from the simplified graph (what onnx2tf converted); values from the file's.
        produced = {out for node in self.onnx.model.graph.node for out in node.output}
        nodes = [n for n in spatial_nodes(self.onnx.simplified) if n[1] in produced]
        if not nodes:
            raise ValueError(
                "the ONNX graph has no spatial feature map ([1, C, h, w], h x w > 1) to explain"
            )
        probe = np.random.default_rng(0).uniform(-1.0, 1.0, (1, self.height, self.width, 3))
        probe = probe.astype(np.float32)
        wanted = self.onnx.run(probe, [tensor for _, tensor in nodes])
        ops = list(self.shapes)
        found = dict(zip(ops, self._values(probe, ops), strict=True))
        targets = []
        for (node, tensor), value in zip(nodes, wanted, strict=True):
            nhwc = np.transpose(value[0], (1, 2, 0))
            scale = float(np.abs(nhwc).max()) or 1.0
            errors = {
                op: float(np.abs(found[op] - nhwc).max())
                for op in ops
                if found[op].shape == nhwc.shape
            }
            close = [op for op, error in errors.items() if error <= MATCH_ATOL * scale]
            if close:  # the closest; of equals (a copy, a transpose) the last, the head's
                targets.append(Target(node, tensor, min(reversed(close), key=errors.__getitem__)))
        return targets

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

    def candidates(self, target: str | None) -> list[str]:
        ops = [t.op for t in self.targets][::-1]
        if not target:
            return ops
        matches = [t.op for t in self.targets[::-1] if target in (t.node, t.tensor)]
        if not matches:
            names = ", ".join(t.node for t in self.targets[::-1][:5])
            raise ValueError(f"No spatial ONNX node is named {target!r}; the last ones: {names}")
        return matches[:1]

    def describe(self, name: str) -> str:
        node = next((t.node for t in self.targets if t.op == name), name)
        return node

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
