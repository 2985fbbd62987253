"""Where a model comes from, one module per format behind one shape (`base`): `keras` (.keras,
.h5, Keras 2 SavedModels through tf_keras) and `savedmodel` (any other SavedModel's frozen
graph) and `onnx` (an ONNX file, through onnx2tf). `load_subject` picks one from the path."""

from __future__ import annotations

from pathlib import Path

from dermcam.keras_loading import load_model_file
from model_store.exporting.sources.keras import KerasSubject
from model_store.exporting.sources.savedmodel import SavedModelSubject

Subject = KerasSubject | SavedModelSubject


def load_subject(
    path: str | Path,
    output_layer: str | None = None,
    input_size: tuple[int, int] | None = None,
    trust_lambda_code: bool = False,
    custom_objects_file: str | Path | None = None,
    prefix_tokens: int | None = None,
) -> KerasSubject | SavedModelSubject:
    """A .keras/.h5 file (Keras 3, else tf_keras), a Keras 2 SavedModel (its layers, through
    tf_keras), any other SavedModel directory (its frozen serving graph), or an .onnx file."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from model_store.exporting.sources.onnx import OnnxSubject  # onnx2tf only when asked

        return OnnxSubject(path, output_layer, input_size, prefix_tokens)
    if prefix_tokens is not None:
        raise ValueError("--prefix-tokens is for transformers exported to ONNX (.onnx).")

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
