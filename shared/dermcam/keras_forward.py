"""The Grad-CAM forward pass of a Keras classifier: image (and any extra inputs) →
(target layer's activations, logits, probabilities), for Keras 3 and tf_keras models alike.

`CamForward` replays a model layer by layer, recursing into the nested models that hold
the target layer or the classifier (a transfer-learning backbone, Teachable Machine's
Sequential inside a Sequential). That replay is what lets Grad-CAM reach inside a nested
model, where the usual two-output sub-model fails with "not connected to inputs".

The classifier head decides the probabilities and the score Grad-CAM differentiates:

| output layer | probabilities | logit score |
|---|---|---|
| softmax, n units | the softmax | its input |
| linear, n > 1 units | a softmax added | the output itself |
| sigmoid (or linear) with 1 unit | two classes [1 − p, p] | [−z, z], z the pre-sigmoid value |
| sigmoid, n > 1 units | independent (multi-label) | each unit's pre-sigmoid value |
| anything else | the output itself | none (export with --score probability) |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from dermcam.keras_loading import Framework, framework_of

Path_ = tuple[str, ...]  # a layer named from the outer model: ("efficientnetb0", "top_conv")


def _output_shape(layer: Any) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def spatial_layers(model: Any, prefix: Path_ = ()) -> list[Path_]:
    """Paths of layers with an [N, h, w, c] output (h·w > 1), in graph order, looking
    inside nested models: ("efficientnetb0", "top_activation")."""
    fw = framework_of(model)
    found: list[Path_] = []
    for layer in model.layers:
        if fw.is_model(layer):
            found.extend(spatial_layers(layer, prefix + (layer.name,)))
            continue
        if fw.is_input_layer(layer):
            continue
        shape = _output_shape(layer)
        # None: a size-agnostic model's layer, spatial at any served size until shown otherwise
        if shape is not None and len(shape) == 4 and (shape[1] or 2) * (shape[2] or 2) > 1:
            found.append(prefix + (layer.name,))
    return found


def _match(candidates: list[Path_], wanted: str, what: str) -> Path_:
    parts = tuple(wanted.split("/"))
    matches = [c for c in candidates if c == parts or c[-len(parts) :] == parts]
    if len(matches) != 1:
        hint = ", ".join("/".join(c) for c in candidates[-6:])
        problem = "matches several layers" if matches else f"is not {what} of the model"
        raise ValueError(f"{wanted!r} {problem}; the last ones are: {hint}")
    return matches[0]


def parse_target(model: Any, target: str | None) -> Path_:
    """A target given as "layer" or "nested/layer" (or, for a unique name, just "layer")."""
    candidates = spatial_layers(model)
    if not candidates:
        raise ValueError("The model has no spatial layer (an [N, h, w, c] output) to explain.")
    if target is None:
        return candidates[-1]
    return _match(candidates, target, "a spatial layer")


def resolve(model: Any, path: Path_) -> Any:
    layer = model
    for name in path:
        layer = layer.get_layer(name)
    return layer


def _models_along(model: Any, path: Path_) -> list[Any]:
    """The nested models a path passes through (not the outer model, not the last layer)."""
    found, layer = [], model
    for name in path[:-1]:
        layer = layer.get_layer(name)
        found.append(layer)
    return found


# --- the classifier head ---------------------------------------------------------------


def _activation_name(layer: Any) -> str:
    if type(layer).__name__ == "Softmax":
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return "linear" if name in ("", "identity") and hasattr(layer, "activation") else name


@dataclass(frozen=True)
class Head:
    """The classifier output: which layer, its activation and its width."""

    path: Path_
    activation: str
    units: int

    @property
    def classes(self) -> int:
        return 2 if self.binary else self.units

    @property
    def binary(self) -> bool:
        return self.units == 1 and self.activation in ("sigmoid", "linear")

    @property
    def kind(self) -> str:
        """softmax | logits | binary | multilabel | other (see the module's table)."""
        if self.binary:
            return "binary"
        if self.activation == "softmax":
            return "softmax"
        if self.activation == "linear":
            return "logits"
        if self.activation == "sigmoid":
            return "multilabel"
        return "other"

    @property
    def probabilities(self) -> str:
        """'exclusive' (they sum to 1) or 'independent' (multi-label, each on its own)."""
        return "independent" if self.kind in ("multilabel", "other") else "exclusive"

    def describe(self) -> dict[str, Any]:
        return {
            "output_layer": "/".join(self.path),
            "activation": self.activation,
            "units": self.units,
            "kind": self.kind,
            "probabilities": self.probabilities,
        }


def _leaf_output(fw: Framework, model: Any, prefix: Path_, tensor_index: int = 0) -> Path_:
    """The path of the non-model layer producing a model's output, descending into nested
    models (Teachable Machine's head is a Sequential inside a Sequential)."""
    if fw.is_sequential(model):
        layer = model.layers[-1]
    else:
        layer = fw.producer(model.outputs[tensor_index])
    path = prefix + (layer.name,)
    return _leaf_output(fw, layer, path) if fw.is_model(layer) else path


def _head_at(model: Any, path: Path_) -> Head:
    layer = resolve(model, path)
    shape = _output_shape(layer)
    if shape is None or len(shape) != 2:
        raise ValueError(f"Layer {'/'.join(path)!r} has output {shape}, not a class vector.")
    return Head(path, _activation_name(layer), int(shape[-1]))


def _class_vector_layers(model: Any, prefix: Path_ = ()) -> list[Path_]:
    fw = framework_of(model)
    found: list[Path_] = []
    for layer in model.layers:
        if fw.is_model(layer):
            found.extend(_class_vector_layers(layer, prefix + (layer.name,)))
        else:
            shape = _output_shape(layer)
            if shape is not None and len(shape) == 2 and _activation_name(layer):
                found.append(prefix + (layer.name,))
    return found


def find_head(model: Any, output_layer: str | None = None) -> Head:
    """The classifier: `output_layer` when named, else the model's only output. A model with
    several outputs, or whose output is not a class vector, must name it (ValueError)."""
    fw = framework_of(model)
    if output_layer:
        return _head_at(model, _match(_class_vector_layers(model), output_layer, "a dense layer"))
    count = 1 if fw.is_sequential(model) else len(model.outputs)
    if count == 1:
        path = _leaf_output(fw, model, ())
        shape = _output_shape(resolve(model, path))
        if shape is not None and len(shape) == 2:
            return _head_at(model, path)
        problem = f"The model's output has shape {shape}, not a class vector"
    else:
        problem = f"The model has {count} outputs"
    names = [_describe_layer(model, _leaf_output(fw, model, (), i)) for i in range(count)]
    names = names if count > 1 else []
    names += [_describe_layer(model, p) for p in _class_vector_layers(model)[-6:] if p not in names]
    raise ValueError(
        f"{problem}; name the classifier with --output-layer. Candidates: {', '.join(names)}."
    )


def _describe_layer(model: Any, path: Path_) -> str:
    layer = resolve(model, path)
    shape = _output_shape(layer)
    width = shape[-1] if shape else "?"
    return f"{'/'.join(path)} ({type(layer).__name__}, {width} units, {_activation_name(layer)})"


# --- the replay --------------------------------------------------------------------------


class CamForward:
    """Callable (image, extras) → (activations, logits or None, probabilities).

    `extras` maps the model's other input names to tensors (patient metadata)."""

    def __init__(self, model: Any, target: Path_, head: Head | None = None) -> None:
        self.model = model
        self.fw = framework_of(model)
        self.target = target
        self.head = head or find_head(model)
        self.target_layer = resolve(model, target)
        self.output_layer = resolve(model, self.head.path)
        self._descend = {
            id(m) for m in _models_along(model, target) + _models_along(model, self.head.path)
        }
        self.input_names = [_input_name(t) for t in model.inputs]
        self.image_index = image_input_index(model)

    def __call__(
        self, image: tf.Tensor, extras: dict[str, tf.Tensor] | None = None
    ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
        sink: dict[str, tf.Tensor] = {}
        extras = extras or {}
        inputs = [
            image if i == self.image_index else extras[name]
            for i, name in enumerate(self.input_names)
        ]
        self._run(self.model, inputs, sink)
        return sink["activations"], sink.get("logits"), sink["probs"]

    def _run(self, model: Any, inputs: list[tf.Tensor], sink: dict) -> Any:
        def wrap(layer: Any) -> Callable:
            def call(*args: Any, **kwargs: Any) -> Any:
                if self.fw.takes_training(layer):
                    kwargs["training"] = False
                if id(layer) in self._descend:
                    nested = args[0] if isinstance(args[0], list | tuple) else [args[0]]
                    result = self._run(layer, list(nested), sink)
                elif layer is self.output_layer:
                    result = self._split_head(layer, args, kwargs, sink)
                else:
                    result = layer(*args, **kwargs)
                if layer is self.target_layer:
                    sink["activations"] = result
                return result

            return call

        if self.fw.is_sequential(model):
            x = inputs[0]
            for layer in model.layers:
                x = wrap(layer)(x)
            return x
        outputs = self.fw.replay(model, inputs, wrap)
        return outputs[0] if len(outputs) == 1 else outputs

    def _split_head(self, layer: Any, args: tuple, kwargs: dict, sink: dict) -> tf.Tensor:
        """Run the classifier layer keeping its pre-activation value z; answer what the layer
        itself answers, so anything after it still runs."""
        kind = self.head.kind
        if kind == "other":
            sink["probs"] = layer(*args, **kwargs)
            return sink["probs"]
        if type(layer).__name__ in ("Softmax", "Activation"):
            z = args[0]
        else:
            saved = layer.activation
            layer.activation = _identity
            try:
                z = layer(*args, **kwargs)
            finally:
                layer.activation = saved
        sink["logits"], sink["probs"] = head_outputs(kind, z)
        if kind == "binary":  # what the layer answered: p, or z for a one-unit logit head
            return tf.sigmoid(z) if self.head.activation == "sigmoid" else z
        return z if kind == "logits" else sink["probs"]


def head_outputs(kind: str, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(logits, probabilities) from a classifier's pre-activation value `z` (module table)."""
    if kind == "binary":
        p = tf.sigmoid(z)
        return tf.concat([-z, z], axis=-1), tf.concat([1.0 - p, p], axis=-1)
    if kind == "multilabel":
        return z, tf.sigmoid(z)
    return z, tf.nn.softmax(z, axis=-1)


def _identity(x: tf.Tensor) -> tf.Tensor:
    return x


def image_input_index(model: Any) -> int:
    """Which of the model's inputs is the image: the one RGB [N, H, W, 3] input (H and W may
    be None, a model built for any size: the exporter then fixes the size it serves)."""
    images = [i for i, t in enumerate(model.inputs) if len(t.shape) == 4 and t.shape[3] == 3]
    if len(images) != 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in model.inputs)
        raise ValueError(f"Expected one RGB image input [N, H, W, 3], got {shapes}.")
    return images[0]


def _input_name(tensor: Any) -> str:
    name = getattr(tensor, "name", "") or ""
    return name.split(":")[0]
