"""The Keras/TensorFlow side: the Grad-CAM forward pass of any Keras classifier, and the
reference engine. Imports TensorFlow, so only the exporter, the tests, benchmarks and
DERMCAM_ENGINE=keras ever import this module.

`CamForward` replays a model layer by layer (recursing into a nested backbone) and returns
the target layer's activations, the pre-softmax logits and the probabilities. That replay
is what lets Grad-CAM reach inside a nested model, where the usual two-output sub-model
fails with "not connected to inputs" (FINDINGS.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dermcam.engine import Explanation, one_hot  # noqa: E402
from dermcam.errors import ModelUnavailable  # noqa: E402
from dermcam.manifest import read_manifest  # noqa: E402

# Input preprocessing baked into artifacts, so every caller sends RGB 0–255.
# Names follow keras.applications' preprocess_input modes.
PREPROCESSING = ("none", "scale01", "tf", "caffe", "torch")
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def preprocess(mode: str, x: tf.Tensor) -> tf.Tensor:
    """RGB 0–255 → what the model was trained on (keras.applications' modes)."""
    if mode == "none":
        return x
    if mode == "scale01":
        return x / 255.0
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return tf.reverse(x, axis=[-1]) - tf.constant(_CAFFE_BGR_MEAN, tf.float32)
    if mode == "torch":
        return (x / 255.0 - tf.constant(_TORCH_MEAN)) / tf.constant(_TORCH_STD)
    raise ValueError(f"unknown preprocessing {mode!r}; use one of {', '.join(PREPROCESSING)}")


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a .keras or .h5 file without compiling (no optimizer state is needed)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise ValueError(
                f"{path} is a TensorFlow SavedModel, which Keras 3 cannot load with its layers; "
                "load it in the framework that wrote it and save it as .keras or .h5."
            )
        raise ValueError(f"{path} is a folder, not a model file")
    return keras.models.load_model(path, compile=False)


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def spatial_layers(model: keras.Model, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of layers with an [N, h, w, c] output (h·w > 1), in graph order, looking
    inside nested models: ("efficientnetb0", "top_activation")."""
    found: list[tuple[str, ...]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(spatial_layers(layer, prefix + (layer.name,)))
            continue
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = _output_shape(layer)
        if shape is not None and len(shape) == 4 and (shape[1] or 0) * (shape[2] or 0) > 1:
            found.append(prefix + (layer.name,))
    return found


def parse_target(model: keras.Model, target: str | None) -> tuple[str, ...]:
    """A target given as "layer" or "nested/layer" (or, for a unique name, just "layer")."""
    candidates = spatial_layers(model)
    if not candidates:
        raise ValueError("The model has no spatial layer (an [N, h, w, c] output) to explain.")
    if target is None:
        return candidates[-1]
    wanted = tuple(target.split("/"))
    matches = [c for c in candidates if c == wanted or c[-len(wanted) :] == wanted]
    if len(matches) != 1:
        hint = ", ".join("/".join(c) for c in candidates[-5:])
        what = "matches several layers" if matches else "is not a spatial layer of the model"
        raise ValueError(f"Target layer {target!r} {what}; the last ones are: {hint}")
    return matches[0]


def _activation_name(layer: Any) -> str:
    return getattr(getattr(layer, "activation", None), "__name__", "")


def _output_layer(model: keras.Model) -> keras.layers.Layer:
    if isinstance(model, keras.Sequential):
        return model.layers[-1]
    return model.outputs[0]._keras_history.operation


class CamForward:
    """Callable x → (activations, logits or None, probabilities), replaying `model`."""

    def __init__(self, model: keras.Model, target: tuple[str, ...]) -> None:
        self.model = model
        self.target = target
        self.output_layer = _output_layer(model)
        kind = _activation_name(self.output_layer)
        if isinstance(self.output_layer, keras.layers.Softmax):
            kind = "softmax"
        self.output_activation = kind

    def __call__(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
        sink: dict[str, tf.Tensor] = {}
        out = self._run(self.model, x, self.target, sink, outer=True)
        if "probs" in sink:  # the softmax was split off the output layer
            return sink["activations"], sink["logits"], sink["probs"]
        if self.output_activation == "linear":  # the model answers logits
            return sink["activations"], out, tf.nn.softmax(out, axis=-1)
        return sink["activations"], None, out

    def _run(
        self, model: keras.Model, x: tf.Tensor, path: tuple[str, ...], sink: dict, outer: bool
    ) -> tf.Tensor:
        target_layer = model.get_layer(path[0])

        def wrap(layer: keras.layers.Layer) -> Callable:
            def call(*args: Any, **kwargs: Any) -> tf.Tensor:
                if getattr(layer, "_call_has_training_arg", False):
                    kwargs["training"] = False
                if layer is target_layer and len(path) > 1:
                    result = self._run(layer, args[0], path[1:], sink, outer=False)
                elif outer and layer is self.output_layer and self.output_activation == "softmax":
                    result = self._split_softmax(layer, args[0], sink)
                else:
                    result = layer(*args, **kwargs)
                if layer is target_layer and len(path) == 1:
                    sink["activations"] = result
                return result

            return call

        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                x = wrap(layer)(x)
            return x
        return model._run_through_graph(x, operation_fn=wrap)

    @staticmethod
    def _split_softmax(layer: keras.layers.Layer, x: tf.Tensor, sink: dict) -> tf.Tensor:
        if isinstance(layer, keras.layers.Dense):
            logits = tf.matmul(x, layer.kernel)
            if layer.use_bias:
                logits = logits + layer.bias
        else:  # an Activation("softmax") or Softmax layer: its input is the logit
            logits = x
        sink["logits"] = logits
        sink["probs"] = tf.nn.softmax(logits, axis=-1)
        return sink["probs"]


def class_score(
    logits: tf.Tensor | None, probs: tf.Tensor, target: tf.Tensor, score: str
) -> tf.Tensor:
    """score[target] as reduce_sum(scores * one_hot): indexing would need StridedSliceGrad."""
    if score == "logit":
        if logits is None:
            raise ValueError(
                "The model's output layer applies a non-softmax activation, so its pre-softmax "
                "logit is not available; export with --score probability."
            )
        return tf.reduce_sum(logits * target)
    return tf.reduce_sum(probs * target)


class KerasEngine:
    """Reference engine: the original Keras model under TensorFlow, gradients by GradientTape.

    Needs the source model kept in the model dir (manifest `source`). Exists to compare the
    LiteRT artifacts with TensorFlow and as the benchmark baseline, not for serving."""

    def __init__(self, model_dir: str) -> None:
        self.manifest = read_manifest(model_dir)
        source = self.manifest.raw.get("source") or {}
        if not source.get("file"):
            raise ModelUnavailable("The keras engine needs the source model in the model dir.")
        try:
            model = load_keras_model(self.manifest.directory / source["file"])
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"The source model cannot be loaded: {exc}") from exc
        self.preprocessing = self.manifest.raw.get("preprocessing", "none")
        self.forward = CamForward(model, tuple(self.manifest.target_layer.split("/")))

    def predict(self, tensor: np.ndarray) -> np.ndarray:
        x = preprocess(self.preprocessing, tf.constant(tensor, tf.float32))
        return self.forward.model(x, training=False).numpy()[0]

    def explain(self, tensor: np.ndarray, target: int) -> Explanation:
        return tape_explain(
            self.forward,
            self.preprocessing,
            self.manifest.score,
            tensor,
            one_hot(target, len(self.manifest.labels)),
        )


def tape_explain(
    forward: CamForward, preprocessing: str, score: str, tensor: np.ndarray, target: np.ndarray
) -> Explanation:
    """TensorFlow's own gradients (GradientTape, no rewrites): the parity reference."""
    x = preprocess(preprocessing, tf.constant(tensor, tf.float32))
    with tf.GradientTape() as tape:
        activations, logits, probs = forward(x)
        value = class_score(logits, probs, tf.constant(target), score)
    grads = tape.gradient(value, activations)
    return Explanation(probs.numpy()[0], activations.numpy()[0], grads.numpy()[0])
