"""A TensorFlow SavedModel as an export source: its layers are gone, so the frozen
`serving_default` graph is imported with the target tensor exposed, the gradient rewrites set
as `_gradient_op_type` on the graph's nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from dermcam.engine import Explanation
from dermcam.keras_engine import class_score, preprocess
from dermcam.keras_forward import Head, head_outputs
from model_store.exporting.graph.gradients import OVERRIDES
from model_store.exporting.graph.grouped import grouped_as_depthwise
from model_store.exporting.sources.base import Forward, Reference


class SavedModelSubject:
    """A SavedModel's `serving_default` signature, variables frozen into constants."""

    def __init__(self, path: str | Path) -> None:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        loaded = tf.saved_model.load(str(path))
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"{path} has no serving_default signature")
        try:
            frozen = convert_variables_to_constants_v2(loaded.signatures["serving_default"])
        except (ValueError, TypeError, tf.errors.OpError) as exc:
            raise ValueError(
                f"The SavedModel's serving graph cannot be frozen ({str(exc)[:160]}). Graphs "
                "that update variables at inference (e.g. Keras 3 augmentation layers' seed "
                "state) cannot be; export from the .keras file instead."
            ) from exc
        graph = frozen.graph
        inputs = [t for t in frozen.inputs if t.dtype == tf.float32]
        if len(inputs) != 1 or inputs[0].shape.rank != 4 or inputs[0].shape[3] != 3:
            raise ValueError(f"Expected one float image input [N, H, W, 3], got {frozen.inputs}")
        self.input_name = inputs[0].name
        self.extra_inputs: dict[str, int] = {}
        if not (inputs[0].shape[1] and inputs[0].shape[2]):
            raise ValueError(
                f"The SavedModel's image input {inputs[0].shape} has no fixed size; export "
                "the .keras or .h5 file it came from with --input-size instead."
            )
        self.height, self.width = int(inputs[0].shape[1]), int(inputs[0].shape[2])
        output = frozen.outputs[0]
        tensor = output
        while tensor.op.type == "Identity":
            tensor = tensor.op.inputs[0]
        units = int(output.shape[-1])
        activation = {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(tensor.op.type, "linear")
        self.head = Head(("serving_default",), activation, units)
        self.classes = self.head.classes
        # The classifier's pre-activation value z: the softmax's or sigmoid's input, or the
        # output itself (a model that answers logits).
        self.z_name = tensor.op.inputs[0].name if activation != "linear" else output.name
        self.loader = f"tensorflow {tf.__version__} (frozen SavedModel graph)"
        self.loader_name = "savedmodel"
        self.trust_lambda_code = False
        self.custom_objects_file = None
        self.refused = None
        skip = {"Const", "Identity", "Placeholder", "NoOp"}
        self.shapes = {
            op.name: [int(d) for d in op.outputs[0].shape[1:]]
            for op in graph.get_operations()
            if op.type not in skip
            and op.outputs
            and op.outputs[0].shape.rank == 4
            and op.outputs[0].shape[1:].is_fully_defined()
            and op.outputs[0].shape[1] * op.outputs[0].shape[2] > 1
        }
        self.plain = grouped_as_depthwise(graph.as_graph_def())
        self.rewritten = tf.compat.v1.GraphDef()
        self.rewritten.CopyFrom(self.plain)
        for node in self.rewritten.node:  # what gradient_override_map would have set
            if node.op in OVERRIDES:
                node.attr["_gradient_op_type"].s = OVERRIDES[node.op].encode()
        self.variables: list[tf.Variable] = []
        self.weight_bytes = sum(
            len(node.attr["value"].tensor.tensor_content)
            for node in self.plain.node
            if node.op == "Const" and node.attr["value"].tensor.dtype == tf.float32.as_datatype_enum
        )

    def candidates(self, target: str | None) -> list[str]:
        names = list(self.shapes)[::-1]
        if not target:
            return names
        matches = [n for n in names if n == target or f"/{target}" in f"/{n}"]
        if not matches:
            raise ValueError(
                f"No spatial op of the SavedModel matches {target!r}; the last ones "
                f"are: {', '.join(names[:5])}"
            )
        return matches[:1]

    def graph(self, name: str, rewritten: bool) -> tuple[tf.compat.v1.GraphDef, str]:
        """The graph to import for target `name`, and the target's tensor in it."""
        return (self.rewritten if rewritten else self.plain), f"{name}:0"

    def fold(self, name: str) -> dict | None:
        """How the target's tensor was folded into a feature map (a transformer's tokens)."""
        return None

    def forward(self, name: str, rewritten: bool = True) -> Forward:
        graph_def, target = self.graph(name, rewritten)

        def call(
            x: tf.Tensor, extras: dict | None = None
        ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
            activations, z = tf.graph_util.import_graph_def(
                graph_def,
                input_map={self.input_name: x},
                return_elements=[target, self.z_name],
                name="model",
            )
            return (activations, *head_outputs(self.head.kind, z))

        return call

    def describe(self, name: str) -> str:
        return name

    def shape(self, name: str) -> list[int]:
        return self.shapes[name]

    def reference(self, name: str, preprocessing: str, score: str) -> Reference:
        """TensorFlow's own gradients of the imported graph, no rewrites (Flex ops are fine
        inside TensorFlow)."""
        forward = self.forward(name, rewritten=False)

        @tf.function
        def explain(image: tf.Tensor, hot: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            activations, logits, probs = forward(preprocess(preprocessing, image))
            (gradients,) = tf.gradients(class_score(logits, probs, hot, score), activations)
            return probs, activations, gradients

        def run(tensor: np.ndarray, hot: np.ndarray, extras: dict | None = None) -> Explanation:
            probs, activations, gradients = explain(tf.constant(tensor), tf.constant(hot))
            return Explanation(probs.numpy()[0], activations.numpy()[0], gradients.numpy()[0])

        return run
