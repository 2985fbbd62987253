"""tf.function → SavedModel (raw variables tracked) → TFLite flatbuffer, builtins only.

Tracking the Keras model itself as the trackable silently drops every weight (a 0.2 MB file
with VAR_HANDLE ops that returns NaN, FINDINGS.md); tracking the raw tf.Variables works.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import tensorflow as tf

QUANTIZATIONS = ("none", "float16", "dynamic-int8")
_FILE_SIZE_FLOOR = {"none": 0.5, "float16": 0.25, "dynamic-int8": 0.12}


class FlexOpsRequired(RuntimeError):
    """The graph needs TensorFlow ops the LiteRT runtime does not have."""

    def __init__(self, ops: list[str]) -> None:
        self.ops = ops
        super().__init__(
            "The graph needs TensorFlow ops that LiteRT has no builtin for: "
            + ", ".join(ops)
            + ". Choose another --target-layer (usually the last convolutional block's "
            "output), or replace the layer that uses them."
        )


def _flex_ops(message: str) -> list[str]:
    found = set(re.findall(r"\btf\.(\w+)\(", message))
    found |= {m for m in re.findall(r"Flex(\w+)", message) if m not in ("Delegate", "Ops")}
    return sorted(found) or ["(unnamed)"]


def to_tflite(
    concrete: tf.types.experimental.ConcreteFunction,
    variables: list[tf.Variable],
    quantization: str = "none",
) -> bytes:
    """Convert one signature `serving_default`. Raises FlexOpsRequired."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}")
    with tempfile.TemporaryDirectory(prefix="dermcam-sm-") as tmp:
        module = tf.Module()
        module.vars = variables
        tf.saved_model.save(
            module,
            tmp,
            signatures={"serving_default": concrete},
            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=["serving_default"]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError and friends
            text = str(exc)
            if (
                "Flex" in text
                or "not supported by the native TFLite runtime" in text
                or ("tf." in text and "legalize" in text)
                or "ERROR_NEEDS_CUSTOM_OPS" in text  # e.g. 'tf.Erfc' op is neither a custom ...
            ):
                raise FlexOpsRequired(_flex_ops(text)) from exc
            raise


def check_flatbuffer(path: Path, weight_bytes: int, quantization: str) -> list[str]:
    """The op list of a written artifact; raises if it holds non-builtin ops or lost weights."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    bad = [
        op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "VAR_HANDLE", "READ_VARIABLE")
    ]
    if bad:
        raise RuntimeError(f"{path.name} contains ops the runtime cannot serve: {', '.join(bad)}")
    size = path.stat().st_size
    floor = _FILE_SIZE_FLOOR[quantization] * weight_bytes
    if size < floor:
        raise RuntimeError(
            f"{path.name} is {size:,} bytes for {weight_bytes:,} bytes of weights: "
            "the weights were lost in conversion."
        )
    return ops
