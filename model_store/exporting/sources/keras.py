"""A Keras 3 or tf_keras model as an export source: replayed layer by layer (CamForward), so
nested backbones, Sequential models and several inputs all give their target layer."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dermcam.keras_engine import tape_explain
from dermcam.keras_forward import (
    CamForward,
    Head,
    find_head,
    image_input_index,
    parse_target,
    resolve,
    spatial_layers,
)
from dermcam.keras_loading import LoadedModel, framework_of
from model_store.exporting.sources.base import Forward, Reference

ANY_SIZE_CANDIDATES = 6  # a size-agnostic model's last spatial layers, found by running it


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

    def fold(self, path: tuple[str, ...]) -> dict | None:
        """A Keras target is a feature map as it is: nothing folded."""
        return None

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
