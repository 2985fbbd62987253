"""The reference engine: the user's own Keras model under TensorFlow, gradients by
GradientTape, plus the preprocessing and class score the exporter bakes into the artifacts.
Imports TensorFlow, so only the exporter, the tests, benchmarks and DERMCAM_ENGINE=keras ever
import this module (and `keras_loading`, `keras_forward`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dermcam.engine import (  # noqa: E402
    Explanation,
    Extras,
    Observation,
    checked_extras,
    one_hot,
    pooled,
)
from dermcam.errors import ModelUnavailable  # noqa: E402
from dermcam.keras_forward import CamForward, Head, find_head  # noqa: E402
from dermcam.keras_loading import load_model_file  # noqa: E402
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


def class_score(
    logits: tf.Tensor | None, probs: tf.Tensor, target: tf.Tensor, score: str
) -> tf.Tensor:
    """score[target] as reduce_sum(scores * one_hot): indexing would need StridedSliceGrad."""
    if score == "logit":
        if logits is None:
            raise ValueError(
                "The classifier's output layer is neither softmax, sigmoid nor linear, so it "
                "has no logit to explain; export with --score probability."
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
            loaded = load_model_file(
                self.manifest.directory / source["file"],
                source.get("loader"),
                bool(source.get("trust_lambda_code")),  # as the exporter was told to
                self.manifest.directory / source["custom_objects"]
                if source.get("custom_objects")
                else None,
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"The source model cannot be loaded: {exc}") from exc
        self.preprocessing = self.manifest.raw.get("preprocessing", "none")
        output_layer = (self.manifest.raw.get("head") or {}).get("output_layer")
        head: Head = find_head(loaded.model, output_layer)
        target = tuple(self.manifest.target_layer.split("/"))
        self.forward = CamForward(loaded.model, target, head)

    def predict(self, tensor: np.ndarray, extras: Extras = None) -> np.ndarray:
        return self.observe(tensor, extras).probabilities

    def observe(self, tensor: np.ndarray, extras: Extras = None) -> Observation:
        x = preprocess(self.preprocessing, tf.constant(tensor, tf.float32))
        extra = _constants(checked_extras(self.manifest, extras))
        activations, _, probs = self.forward(x, extra)
        return Observation(probs.numpy()[0], pooled(activations.numpy()[0]))

    def explain(self, tensor: np.ndarray, target: int, extras: Extras = None) -> Explanation:
        return tape_explain(
            self.forward,
            self.preprocessing,
            self.manifest.score,
            tensor,
            one_hot(target, len(self.manifest.labels)),
            checked_extras(self.manifest, extras),
        )


def _constants(extras: Extras) -> dict[str, tf.Tensor]:
    return {name: tf.constant(value, tf.float32) for name, value in (extras or {}).items()}


def tape_explain(
    forward: CamForward,
    preprocessing: str,
    score: str,
    tensor: np.ndarray,
    target: np.ndarray,
    extras: Extras = None,
) -> Explanation:
    """TensorFlow's own gradients (GradientTape, no rewrites): the parity reference."""
    x = preprocess(preprocessing, tf.constant(tensor, tf.float32))
    with tf.GradientTape() as tape:
        activations, logits, probs = forward(x, _constants(extras))
        value = class_score(logits, probs, tf.constant(target), score)
    grads = tape.gradient(value, activations)
    return Explanation(probs.numpy()[0], activations.numpy()[0], grads.numpy()[0])
