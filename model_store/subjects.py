"""What the exporter exports, behind one shape: a Keras model, or a TensorFlow SavedModel.

A subject names its candidate target layers (last first), builds the forward pass
x → (activations, logits or None, probabilities) for one of them, and computes TensorFlow's
own Grad-CAM inputs for parity. Keras models are replayed layer by layer (CamForward); a
SavedModel has lost its layers, so its frozen serving graph is imported with the target
tensor exposed, the gradient rewrites set as `_gradient_op_type` on the graph's nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dermcam.engine import Explanation
from dermcam.keras_engine import class_score, preprocess, tape_explain
from dermcam.keras_forward import (
    CamForward,
    Head,
    find_head,
    head_outputs,
    image_input_index,
    parse_target,
    resolve,
    spatial_layers,
)
from dermcam.keras_loading import LoadedModel, framework_of, load_model_file
from model_store.gradients import OVERRIDES

ANY_SIZE_CANDIDATES = 6  # a size-agnostic model's last spatial layers, found by running it

# (image, extra inputs by name) → (activations, logits or None, probabilities)
Forward = Callable[[tf.Tensor, dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]]
# (image, one-hot target, extra inputs by name) → TensorFlow's own Grad-CAM inputs
Reference = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], Explanation]


class KerasSubject:
    """A Keras 3 or tf_keras model; `output_layer` names the classifier when the model has
    several outputs or its output is not the class vector."""

    def __init__(
        self,
        model: keras.Model | LoadedModel,
        output_layer: str | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        loaded = model if isinstance(model, LoadedModel) else None
        self.model = loaded.model if loaded else model
        framework = framework_of(self.model)
        self.loader = loaded.loader if loaded else f"{framework.name} {framework.version}"
        self.loader_name = framework.name
        self.refused = loaded.refused if loaded else None
        self.trust_lambda_code = loaded.trust_lambda_code if loaded else False
        self.custom_objects_file = loaded.custom_objects_file if loaded else None
        image_index = image_input_index(self.model)
        self.height, self.width = served_size(self.model.inputs[image_index].shape, input_size)
        # Built for any size: layer shapes are known only by running the model at the size.
        self.any_size = not all(self.model.inputs[image_index].shape[1:3])
        self.extra_inputs = _extra_inputs(self.model, image_index)
        self.head: Head = find_head(self.model, output_layer)
        self.classes = self.head.classes
        self.variables = framework.variables(self.model)
        self.weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in self.model.weights)

    def candidates(self, target: str | None) -> list[tuple[str, ...]]:
        if target:
            return [parse_target(self.model, target)]
        found = spatial_layers(self.model)[::-1]
        if not self.any_size:
            return found
        kept = []  # a layer with h·w > 1 at some sizes may be 1×1 at the served one
        for path in found:
            if _area(self.shape(path)) > 1:
                kept.append(path)
            if len(kept) == ANY_SIZE_CANDIDATES:
                break
        return kept

    def describe(self, path: tuple[str, ...]) -> str:
        return "/".join(path)

    def shape(self, path: tuple[str, ...]) -> list[int]:
        """The target layer's [h, w, c] at the served size."""
        if not self.any_size:
            return [int(d) for d in resolve(self.model, path).output.shape[1:]]
        image = tf.zeros([1, self.height, self.width, 3], tf.float32)
        extras = {
            name: tf.zeros([1, width], tf.float32) for name, width in self.extra_inputs.items()
        }
        return [int(d) for d in self.forward(path)(image, extras)[0].shape[1:]]

    def forward(self, path: tuple[str, ...]) -> Forward:
        return CamForward(self.model, path, self.head)

    def reference(self, path: tuple[str, ...], preprocessing: str, score: str) -> Reference:
        forward = CamForward(self.model, path, self.head)
        return lambda tensor, hot, extras: tape_explain(
            forward, preprocessing, score, tensor, hot, extras
        )


def served_size(shape: tuple, input_size: tuple[int, int] | None) -> tuple[int, int]:
    """(height, width) the artifacts take: the model's own, or `input_size` for a model built
    for any size (Input((None, None, 3))), which must then be given."""
    height, width = shape[1], shape[2]
    if height and width:
        if input_size and tuple(input_size) != (height, width):
            raise ValueError(
                f"--input-size {input_size[0]}x{input_size[1]} does not match the model's "
                f"fixed input size {height}x{width}; leave it out."
            )
        return int(height), int(width)
    if not input_size:
        raise ValueError(
            f"The image input {tuple(shape)} has no fixed size: say the size to serve with "
            "--input-size (e.g. 224, or 256x192 as height x width), the size it was trained at."
        )
    return input_size


def _area(shape: list[int]) -> int:
    return shape[0] * shape[1]


def _extra_inputs(model: keras.Model, image_index: int) -> dict[str, int]:
    """The model's inputs besides the image, name → width; each must be a flat vector."""
    extras = {}
    for i, tensor in enumerate(model.inputs):
        if i == image_index:
            continue
        name = tensor.name.split(":")[0]
        if len(tensor.shape) != 2 or not tensor.shape[1]:
            raise ValueError(
                f"Input {name!r} has shape {tuple(tensor.shape)}; besides the image, dermcam "
                "serves flat vectors [N, width] (patient metadata)."
            )
        extras[name] = int(tensor.shape[1])
    return extras


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
        self.plain = graph.as_graph_def()
        self.rewritten = graph.as_graph_def()
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

    def forward(self, name: str, rewritten: bool = True) -> Forward:
        graph_def = self.rewritten if rewritten else self.plain

        def call(
            x: tf.Tensor, extras: dict | None = None
        ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
            activations, z = tf.graph_util.import_graph_def(
                graph_def,
                input_map={self.input_name: x},
                return_elements=[f"{name}:0", self.z_name],
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


def load_subject(
    path: str | Path,
    output_layer: str | None = None,
    input_size: tuple[int, int] | None = None,
    trust_lambda_code: bool = False,
    custom_objects_file: str | Path | None = None,
) -> KerasSubject | SavedModelSubject:
    """A .keras/.h5 file (Keras 3, else tf_keras), a Keras 2 SavedModel (its layers, through
    tf_keras), or any other SavedModel directory (its frozen serving graph)."""
    path = Path(path)

    def keras_subject() -> KerasSubject:
        loaded = load_model_file(path, None, trust_lambda_code, custom_objects_file)
        return KerasSubject(loaded, output_layer, input_size)

    if path.is_dir() and (path / "saved_model.pb").exists():
        if (path / "keras_metadata.pb").exists():
            try:
                return keras_subject()
            except ValueError:
                pass  # layers that tf_keras cannot rebuild: the frozen graph still serves
        if output_layer:
            raise ValueError(
                "--output-layer needs a model with layers (.keras, .h5 or a Keras 2 "
                "SavedModel); this SavedModel has only its serving graph."
            )
        if input_size:
            raise ValueError("--input-size needs a model with layers (.keras, .h5).")
        return SavedModelSubject(path)
    return keras_subject()
