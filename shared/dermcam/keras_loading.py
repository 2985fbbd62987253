"""Keras model files of both generations: Keras 3, and tf.keras 2 through `tf_keras`.

Most models people have were saved by tf.keras (TensorFlow <= 2.15, Keras 2): `.h5` files,
Keras 2 SavedModels, Teachable Machine's `keras_model.h5`. Keras 3 refuses many of them
(e.g. `Unrecognized keyword arguments passed to DepthwiseConv2D: {'groups': 1}`); the
maintained `tf_keras` package (Keras 2, pinned to TensorFlow's version) loads them as they
are. A file is tried with Keras 3 first and with tf_keras when Keras 3 refuses it; the loader
that worked is recorded, so the reference engine loads it the same way.

`Framework` hides the few places where the two generations differ: class checks, which
layer produced a tensor, replaying a functional graph layer by layer, and raw variables.
Imports TensorFlow: exporter, tests and the reference engine only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

LOADERS = ("keras", "tf_keras")


@dataclass(frozen=True)
class Framework:
    name: str  # "keras" (Keras 3) or "tf_keras" (Keras 2)

    @property
    def module(self) -> Any:
        return importlib.import_module(self.name)

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    def is_model(self, layer: Any) -> bool:
        return isinstance(layer, self.module.Model)

    def is_sequential(self, layer: Any) -> bool:
        return isinstance(layer, self.module.Sequential)

    def is_input_layer(self, layer: Any) -> bool:
        return isinstance(layer, self.module.layers.InputLayer)

    def takes_training(self, layer: Any) -> bool:
        if self.name == "keras":
            return bool(getattr(layer, "_call_has_training_arg", False))
        return bool(getattr(layer, "_expects_training_arg", False))

    def variables(self, model: Any) -> list[tf.Variable]:
        """The raw tf.Variables (Keras 3 wraps each in a KerasVariable)."""
        if self.name == "keras":
            return [w.value for w in model.weights]
        return list(model.weights)

    @staticmethod
    def producer(tensor: Any) -> Any:
        """The layer whose call produced a symbolic tensor of a functional model."""
        history = tensor._keras_history
        return getattr(history, "operation", None) or history.layer

    def replay(self, model: Any, inputs: list[tf.Tensor], wrap: Callable) -> list[tf.Tensor]:
        """Run a functional model's graph on `inputs` (in `model.inputs` order), calling
        `wrap(layer)(*args, **kwargs)` in place of each layer."""
        if self.name == "keras":
            outputs = model._run_through_graph(inputs, operation_fn=wrap)
            return list(tf.nest.flatten(outputs))
        return _replay_tf_keras(model, inputs, wrap)


KERAS = Framework("keras")
TF_KERAS = Framework("tf_keras")


def framework_of(model: Any) -> Framework:
    import keras

    return KERAS if isinstance(model, keras.Model) else TF_KERAS


def _replay_tf_keras(model: Any, inputs: list[tf.Tensor], wrap: Callable) -> list[tf.Tensor]:
    # tf_keras' Functional._run_internal_graph, with each layer call passed through `wrap`.
    usage = model._tensor_usage_count
    computed: dict[str, list[tf.Tensor]] = {}
    for reference, value in zip(model.inputs, inputs, strict=True):
        computed[str(id(reference))] = [value] * usage[str(id(reference))]
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(i not in computed for i in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(computed)
            outputs = wrap(node.layer)(*args, **kwargs)
            for output_id, value in zip(
                node.flat_output_ids, tf.nest.flatten(outputs), strict=True
            ):
                computed[output_id] = [value] * usage[output_id]
    return [computed[str(id(x))].pop() for x in model.outputs]


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    framework: Framework
    refused: str | None = None  # why Keras 3 refused the file, when tf_keras loaded it
    trust_lambda_code: bool = False  # loaded with Keras' safe_mode off (Lambda layers' code)
    custom_objects_file: Path | None = None  # the code of the model's own layers, if any

    @property
    def loader(self) -> str:
        return f"{self.framework.name} {self.framework.version}"


def _is_keras2_savedmodel(path: Path) -> bool:
    return path.is_dir() and (path / "keras_metadata.pb").exists()


def load_model_file(
    path: str | Path,
    loader: str | None = None,
    trust_lambda_code: bool = False,
    custom_objects_file: str | Path | None = None,
) -> LoadedModel:
    """Load a .keras/.h5 file (or a Keras 2 SavedModel) without compiling it. With no
    `loader`, Keras 3 first and tf_keras when Keras 3 refuses; ValueError when neither can.
    A `.keras` file's Python-lambda Lambda layers are code: Keras refuses them unless
    `trust_lambda_code` (its safe_mode off), which only the file's owner can decide. A model
    with layers or functions of its own (e.g. `FixedDropout` and `swish` of the `efficientnet`
    package) needs their code: `custom_objects_file`, a Python file defining them."""
    path = Path(path)
    custom_objects = custom_objects_from(custom_objects_file) if custom_objects_file else None
    if path.is_dir() and not _is_keras2_savedmodel(path):
        raise ValueError(f"{path} is a folder, not a Keras model file")
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    order = [loader] if loader else (["tf_keras"] if path.is_dir() else list(LOADERS))
    refused: dict[str, str] = {}
    lambda_code = False  # refused only for a Lambda layer's code (Keras' safe_mode)
    unknown = False  # refused for a layer or function Keras does not know
    for name in order:
        if name not in LOADERS:
            raise ValueError(f"unknown loader {name!r}; use one of {', '.join(LOADERS)}")
        framework = Framework(name)
        try:
            model = framework.module.models.load_model(
                path, custom_objects, compile=False, safe_mode=not trust_lambda_code
            )
        except Exception as exc:  # noqa: BLE001 - each loader fails in its own ways
            refused[name] = f"{type(exc).__name__}: {_last_line(exc)}"
            lambda_code |= "safe_mode" in str(exc)
            unknown |= "Unknown" in str(exc) or "Could not locate" in str(exc)
            continue
        code = Path(custom_objects_file) if custom_objects_file else None
        return LoadedModel(model, framework, refused.get("keras"), trust_lambda_code, code)
    reasons = "; ".join(f"{name} refused it ({why})" for name, why in refused.items())
    if lambda_code and not trust_lambda_code:
        reasons += (
            ". It holds a Lambda layer whose Python code Keras will not run by default; if you "
            "trust the file, export it with --trust-lambda-code"
        )
    if unknown:
        reasons += (
            ". The model uses layers or functions of its own: give their code with "
            "--custom-objects FILE.py (a Python file defining them)"
        )
    raise ValueError(f"{path.name} cannot be loaded: {reasons}")


def custom_objects_from(file: str | Path) -> dict[str, Any]:
    """The classes and functions a Python file defines, by name (or its `custom_objects`
    dict, when it has one), for Keras to rebuild the layers a model file names."""
    file = Path(file)
    spec = importlib.util.spec_from_file_location(f"dermcam_custom_{file.stem}", file)
    if spec is None or spec.loader is None or not file.is_file():
        raise ValueError(f"{file} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if isinstance(getattr(module, "custom_objects", None), dict):
        return dict(module.custom_objects)
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    }


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:300]
