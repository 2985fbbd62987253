"""A loaded model → the LiteRT artifacts dermcam serves: the predict and Grad-CAM graphs,
converted with builtins only, checked against TensorFlow (the parity gate), and the manifest.
Written to a staging folder beside the target and renamed into place at the end, so nothing
half-written is ever served. The CLI is `exporting.cli`."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from dermcam import resize as image_resize
from dermcam.engine import LiteRTEngine
from dermcam.keras_engine import (
    PREPROCESSING,
    class_score,
    preprocess,
)
from dermcam.keras_loading import LoadedModel
from dermcam.manifest import MANIFEST, sha256_file
from dermcam.metadata import Schema
from model_store.exporting import attention as attention_artifact
from model_store.exporting import parity as parity_check
from model_store.exporting.errors import ExportError
from model_store.exporting.graph.convert import (
    QUANTIZATIONS,
    FlexOpsRequired,
    check_flatbuffer,
    to_tflite,
)
from model_store.exporting.graph.gradients import builtin_gradients
from model_store.exporting.labels import check_labels
from model_store.exporting.schema import resolve_metadata
from model_store.exporting.sources import KerasSubject, Subject
from model_store.exporting.sources.base import Forward

SCORES = ("logit", "probability")
CUSTOM_OBJECTS_FILE = "custom_objects.py"  # the model's own layers' code, kept beside it
MAX_AUTO_TARGETS = 6  # candidates tried, last spatial layer first


def _functions(
    forward: Forward,
    mode: str,
    score: str,
    height: int,
    width: int,
    classes: int,
    extras: dict[str, int],
) -> tuple[tf.types.experimental.ConcreteFunction, tf.types.experimental.ConcreteFunction]:
    """The two signatures: `image` (and each extra input under its own name) → probabilities
    and `features`; plus `target` → probabilities, activations and gradients. `features` is
    the target layer's activations averaged over positions (`dermcam.engine.pooled`): what
    the out-of-scope check compares with the calibration photographs', for a few floats."""
    image = tf.TensorSpec([1, height, width, 3], tf.float32, name="image")
    target = tf.TensorSpec([1, classes], tf.float32, name="target")
    names = list(extras)
    specs = [tf.TensorSpec([1, extras[n]], tf.float32, name=n) for n in names]

    @tf.function(input_signature=[image, *specs])
    def predict(image: tf.Tensor, *extra: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs = dict(zip(names, extra, strict=True))
        activations, _, probs = forward(preprocess(mode, image), inputs)
        positions = list(range(1, len(activations.shape) - 1))
        return {"probabilities": probs, "features": tf.reduce_mean(activations, positions)}

    @tf.function(input_signature=[image, target, *specs])
    def gradcam(image: tf.Tensor, target: tf.Tensor, *extra: tf.Tensor) -> dict[str, tf.Tensor]:
        with builtin_gradients():
            inputs = dict(zip(names, extra, strict=True))
            activations, logits, probs = forward(preprocess(mode, image), inputs)
            value = class_score(logits, probs, target, score)
        (gradients,) = tf.gradients(value, activations)
        if gradients is None:
            raise ExportError("The class score does not depend on the target layer.")
        return {"probabilities": probs, "activations": activations, "gradients": gradients}

    return predict.get_concrete_function(), gradcam.get_concrete_function()


def export(
    model: keras.Model | LoadedModel | Subject,
    labels: Sequence[dict[str, str]],
    out_dir: str | Path,
    *,
    name: str = "model",
    version: str = "1",
    target: str | None = None,
    score: str = "logit",
    preprocessing: str = "none",
    resize: str = image_resize.DEFAULT,
    quantization: str = "none",
    output_layer: str | None = None,
    metadata: Schema | dict | list | None = None,
    demo: bool = False,
    card: dict | None = None,
    source: str | Path | None = None,
    parity_images: int = 6,
    max_prob_diff: float | None = None,
    tolerance_reason: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Export `model` (a Keras model, or a loaded subject) into `out_dir`; returns the
    manifest. Raises ExportError."""
    parity_check.unfused_reference()
    if score not in SCORES:
        raise ExportError(f"score must be one of {SCORES}")
    if preprocessing not in PREPROCESSING:
        raise ExportError(f"preprocessing must be one of {PREPROCESSING}")
    if resize not in image_resize.RESIZES:
        raise ExportError(f"resize must be one of {', '.join(image_resize.RESIZES)}")
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}")
    try:
        if isinstance(model, keras.Model | LoadedModel):
            subject = KerasSubject(model, output_layer)
        else:
            subject = model
        candidates = subject.candidates(target)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    height, width, classes = subject.height, subject.width, subject.classes
    check_labels(labels, subject)
    schema = resolve_metadata(subject, metadata)
    if subject.refused:
        log(f"Keras 3 refused the file ({subject.refused}); loaded with {subject.loader}")
    if subject.head.kind == "other" and score == "logit":
        raise ExportError(
            f"The classifier layer {subject.head.describe()['output_layer']!r} applies "
            f"{subject.head.activation!r}, which has no logit to explain; export with "
            "--score probability (or name the classifier with --output-layer)."
        )
    if not candidates:
        raise ExportError("The model has no spatial layer (an [N, h, w, c] output) to explain.")
    variables, weight_bytes = subject.variables, subject.weight_bytes

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=".export-", dir=out_dir.parent, ignore_cleanup_errors=True
    ) as tmp:
        staging = Path(tmp)
        chosen, needed = None, set()
        for path in candidates[:MAX_AUTO_TARGETS]:
            forward = subject.forward(path)
            try:
                predict_fn, gradcam_fn = _functions(
                    forward, preprocessing, score, height, width, classes, subject.extra_inputs
                )
                gradcam_bytes = to_tflite(gradcam_fn, variables, quantization)
            except FlexOpsRequired as exc:
                if target:
                    raise ExportError(f"Target layer {subject.describe(path)}: {exc}") from exc
                log(f"  target {subject.describe(path)} skipped: needs {', '.join(exc.ops)}")
                needed.update(exc.ops)
                continue
            except ValueError as exc:
                raise ExportError(str(exc)) from exc
            chosen = path
            break
        if chosen is None:
            raise ExportError(
                "No spatial layer near the output converts to LiteRT builtins (its gradient "
                f"needs {', '.join(sorted(needed))}); name one with --target-layer."
            )
        chosen_name = subject.describe(chosen)
        log(f"target layer: {chosen_name}" + (" (chosen automatically)" if not target else ""))
        if fold := subject.fold(chosen):
            log(
                f"  folded: {fold['prefix_tokens']} prefix token(s) dropped, the rest as a "
                f"{fold['grid'][0]}×{fold['grid'][1]} grid ({fold['layout']})"
            )
        log(f"resize: {resize}: {image_resize.RESIZES[resize]}")
        (staging / "gradcam.tflite").write_bytes(gradcam_bytes)
        (staging / "predict.tflite").write_bytes(to_tflite(predict_fn, variables, quantization))
        written = attention_artifact.write_artifact(
            subject, staging / "attention.tflite", preprocessing, score, quantization, log
        )
        attention = written[1].describe() if written else None

        artifacts = {}
        for kind in ("predict", "gradcam", "attention")[: 3 if attention else 2]:
            file = staging / f"{kind}.tflite"
            ops = check_flatbuffer(file, weight_bytes, quantization)
            artifacts[kind] = {
                "file": file.name,
                "sha256": sha256_file(file),
                "bytes": file.stat().st_size,
                "ops": ops,
            }
        source_entry = None
        if source is not None:
            src = Path(source)
            kept = staging / f"model{src.suffix}"
            if src.is_dir():  # a SavedModel: kept for reference, not loadable by KerasEngine
                shutil.copytree(src, kept)
            else:
                shutil.copyfile(src, kept)
            source_entry = {
                "file": kept.name,
                "sha256": None if src.is_dir() else sha256_file(kept),
                "loader": subject.loader_name,
            }
            if subject.trust_lambda_code:  # the reference engine must load it the same way
                source_entry["trust_lambda_code"] = True
            if subject.custom_objects_file:  # and with the code of the model's own layers
                shutil.copyfile(subject.custom_objects_file, staging / CUSTOM_OBJECTS_FILE)
                source_entry["custom_objects"] = CUSTOM_OBJECTS_FILE
        manifest = {
            "format": 1,
            "name": name,
            "version": str(version),
            "demo": demo,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "input": {
                "height": height,
                "width": width,
                "channels": 3,
                "dtype": "float32",
                "color": "RGB",
                "range": [0, 255],
                # how the training pipeline decoded and resized; the functions do the same
                "resize": resize,
            },
            "preprocessing": preprocessing,
            "card": card,
            "labels": list(labels),
            "metadata": schema.as_json() if schema else None,
            "head": subject.head.describe(),
            "target_layer": chosen_name,
            "activations_shape": subject.shape(chosen),
            "target_fold": subject.fold(chosen),
            "attention": attention,
            "score": score,
            "quantization": quantization,
            "artifacts": artifacts,
            "source": source_entry,
            "exporter": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "loaded_with": subject.loader,
            },
        }
        _write_manifest(staging, manifest)
        engine = LiteRTEngine(str(staging))
        reference = subject.reference(chosen, preprocessing, score)
        figures = parity_check.measure(reference, engine, parity_images, schema=schema)
        manifest["parity"] = figures.as_dict()
        log("parity vs TensorFlow: " + ", ".join(f"{k}={v}" for k, v in manifest["parity"].items()))
        if max_prob_diff is not None and max_prob_diff != parity_check.MAX_PROB_DIFF:
            manifest["parity"]["tolerance"] = parity_check.tolerance(
                max_prob_diff, tolerance_reason, figures
            )
        if quantization == "none" and not figures.passes(max_prob_diff):
            raise ExportError(parity_check.refusal(figures, max_prob_diff), figures)
        original = parity_check.against_original(subject, engine, parity_images, preprocessing)
        if original is not None:
            manifest["parity"]["original"] = original
            log("parity vs the original: " + ", ".join(f"{k}={v}" for k, v in original.items()))
            if quantization == "none" and not parity_check.original_passes(original, max_prob_diff):
                raise ExportError(
                    f"The artifacts disagree with {original['runtime']} on the original file "
                    f"(max |dp| <= {max_prob_diff or parity_check.MAX_PROB_DIFF:g}, top-1 100 %): "
                    f"{original}. Nothing was written."
                )
        if attention:
            attention["parity"] = attention_artifact.parity(
                *written, LiteRTEngine(str(staging), ("attention",)), subject, preprocessing
            )
            log(
                "attention parity: " + ", ".join(f"{k}={v}" for k, v in attention["parity"].items())
            )
            if not attention_artifact.passes(attention["parity"]):  # the rollout, not the export
                log("attention rollout: not served (its artifact disagrees with its sources)")
                del manifest["artifacts"]["attention"]
                manifest["attention"] = None
                (staging / "attention.tflite").unlink()
        _write_manifest(staging, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.chmod(0o755)  # mkdtemp made it private; a model dir is read by servers
        staging.rename(out_dir)
    return manifest


def _write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
