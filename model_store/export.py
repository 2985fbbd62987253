"""Export a Keras image classifier to the LiteRT artifacts dermcam serves.

    python -m model_store.export MODEL --labels LABELS --out DIR [options]

Writes predict.tflite, gradcam.tflite and manifest.json (and a copy of the source model for
the reference engine), after checking the artifacts against TensorFlow on generated images.
Nothing is written when float32 parity fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import keras
import tensorflow as tf

from dermcam.engine import LiteRTEngine
from dermcam.keras_engine import (
    PREPROCESSING,
    class_score,
    preprocess,
)
from dermcam.keras_loading import LoadedModel
from dermcam.manifest import MANIFEST, sha256_file
from dermcam.metadata import Schema, SchemaError, parse_schema
from model_store import parity as parity_check
from model_store.convert import QUANTIZATIONS, FlexOpsRequired, check_flatbuffer, to_tflite
from model_store.gradients import builtin_gradients
from model_store.subjects import Forward, KerasSubject, SavedModelSubject, load_subject

SCORES = ("logit", "probability")
CUSTOM_OBJECTS_FILE = "custom_objects.py"  # the model's own layers' code, kept beside it
MAX_AUTO_TARGETS = 6  # candidates tried, last spatial layer first


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message says why and what to do."""

    def __init__(self, message: str, parity: parity_check.Parity | None = None) -> None:
        super().__init__(message)
        self.parity = parity  # the figures, when the parity gate refused the export


_TEACHABLE_LINE = re.compile(r"^(\d+)\s+(\S.*)$")


def parse_labels(spec: str) -> list[dict[str, str]]:
    """Labels from a file (lines `code,Display name`; a JSON list; or Teachable Machine's
    labels.txt, lines `0 Benign`) or a comma list of codes."""
    path = Path(spec)
    if path.is_file():
        text = path.read_text()
        if path.suffix == ".json":
            items = json.loads(text)
            return [
                {"code": str(x["code"]), "name": str(x.get("name", x["code"]))}
                if isinstance(x, dict)
                else {"code": str(x), "name": str(x)}
                for x in items
            ]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        numbered = [_TEACHABLE_LINE.match(line) for line in lines]
        if lines and all(numbered) and not any("," in line for line in lines):
            return _teachable_labels([(int(m[1]), m[2].strip()) for m in numbered if m])
        rows = [line.split(",", 1) for line in lines]
        return [
            {"code": r[0].strip(), "name": (r[1] if len(r) > 1 else r[0]).strip()} for r in rows
        ]
    return [{"code": c.strip(), "name": c.strip()} for c in spec.split(",") if c.strip()]


def _teachable_labels(rows: list[tuple[int, str]]) -> list[dict[str, str]]:
    """`0 Benign` lines: the number is the output index, the rest the name; the code is the
    name made URL-safe ("Basal cell carcinoma" → "basal-cell-carcinoma")."""
    if [index for index, _ in rows] != list(range(len(rows))):
        raise ExportError("labels.txt must number its lines 0, 1, 2, ... in order.")
    labels, seen = [], set()
    for index, name in rows:
        code = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or str(index)
        if code in seen:
            code = f"{code}-{index}"
        seen.add(code)
        labels.append({"code": code, "name": name})
    return labels


def _check_labels(
    labels: Sequence[dict[str, str]], subject: KerasSubject | SavedModelSubject
) -> None:
    classes = subject.classes
    if subject.head.binary and len(labels) != 2:
        raise ExportError(
            f"The model ends in one {subject.head.activation} unit: a two-class model whose "
            "probabilities are [1 - p, p]. Give two labels, the class of p = 0 first "
            f"(e.g. benign,malignant); {len(labels)} were given."
        )
    if len(labels) != classes:
        raise ExportError(f"The model has {classes} outputs but {len(labels)} labels were given.")
    codes = [label["code"] for label in labels]
    if len(set(codes)) != len(codes):
        raise ExportError(f"Label codes must be unique: {', '.join(codes)}")


def _functions(
    forward: Forward,
    mode: str,
    score: str,
    height: int,
    width: int,
    classes: int,
    extras: dict[str, int],
) -> tuple[tf.types.experimental.ConcreteFunction, tf.types.experimental.ConcreteFunction]:
    """The two signatures: `image` (and each extra input under its own name) → probabilities;
    plus `target` → probabilities, activations and gradients."""
    image = tf.TensorSpec([1, height, width, 3], tf.float32, name="image")
    target = tf.TensorSpec([1, classes], tf.float32, name="target")
    names = list(extras)
    specs = [tf.TensorSpec([1, extras[n]], tf.float32, name=n) for n in names]

    @tf.function(input_signature=[image, *specs])
    def predict(image: tf.Tensor, *extra: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs = dict(zip(names, extra, strict=True))
        return {"probabilities": forward(preprocess(mode, image), inputs)[2]}

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
    model: keras.Model | LoadedModel | KerasSubject | SavedModelSubject,
    labels: Sequence[dict[str, str]],
    out_dir: str | Path,
    *,
    name: str = "model",
    version: str = "1",
    target: str | None = None,
    score: str = "logit",
    preprocessing: str = "none",
    quantization: str = "none",
    output_layer: str | None = None,
    metadata: Schema | dict | list | None = None,
    demo: bool = False,
    source: str | Path | None = None,
    parity_images: int = 6,
    max_prob_diff: float | None = None,
    tolerance_reason: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Export `model` (a Keras model, or a loaded subject) into `out_dir`; returns the
    manifest. Raises ExportError."""
    if score not in SCORES:
        raise ExportError(f"score must be one of {SCORES}")
    if preprocessing not in PREPROCESSING:
        raise ExportError(f"preprocessing must be one of {PREPROCESSING}")
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
    _check_labels(labels, subject)
    schema = _resolve_metadata(subject, metadata)
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
        chosen = None
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
                continue
            except ValueError as exc:
                raise ExportError(str(exc)) from exc
            chosen = path
            break
        if chosen is None:
            raise ExportError(
                "No spatial layer near the output converts to LiteRT builtins; "
                "name one with --target-layer."
            )
        chosen_name = subject.describe(chosen)
        log(f"target layer: {chosen_name}" + (" (chosen automatically)" if not target else ""))
        (staging / "gradcam.tflite").write_bytes(gradcam_bytes)
        (staging / "predict.tflite").write_bytes(to_tflite(predict_fn, variables, quantization))

        artifacts = {}
        for kind in ("predict", "gradcam"):
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
            },
            "preprocessing": preprocessing,
            "labels": list(labels),
            "metadata": schema.as_json() if schema else None,
            "head": subject.head.describe(),
            "target_layer": chosen_name,
            "activations_shape": subject.shape(chosen),
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
            manifest["parity"]["tolerance"] = _tolerance(max_prob_diff, tolerance_reason, figures)
        if quantization == "none" and not figures.passes(max_prob_diff):
            raise ExportError(_parity_refusal(figures, max_prob_diff), figures)
        _write_manifest(staging, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.chmod(0o755)  # mkdtemp made it private; a model dir is read by servers
        staging.rename(out_dir)
    return manifest


def _resolve_metadata(
    subject: KerasSubject | SavedModelSubject, metadata: Schema | dict | list | None
) -> Schema | None:
    """The schema with every input named and its width checked against the model's."""
    extras = subject.extra_inputs
    described = ", ".join(f"{n} ({w} values)" for n, w in extras.items())
    if metadata is None:
        if extras:
            raise ExportError(
                f"The model takes inputs besides the image: {described}. Say how request "
                "fields become them with --metadata SCHEMA.json (the format is in the README, "
                "'Patient metadata')."
            )
        return None
    try:
        schema = metadata if isinstance(metadata, Schema) else parse_schema(metadata)
    except SchemaError as exc:
        raise ExportError(f"The metadata schema is malformed: {exc}") from exc
    if not extras:
        raise ExportError("--metadata was given, but the model takes only an image.")
    resolved = []
    for item in schema.inputs:
        name = item.input
        if name is None and len(extras) == 1:
            name = next(iter(extras))
        if name not in extras:
            raise ExportError(
                f"The schema's input {name!r} is not one of the model's extra inputs: {described}."
            )
        if item.width != extras[name]:
            widths = ", ".join(f"{f.name} {f.width}" for f in item.fields)
            raise ExportError(
                f"The schema for {name!r} encodes {item.width} values ({widths}); "
                f"the model's input takes {extras[name]}."
            )
        resolved.append(replace(item, input=name))
    missing = sorted(set(extras) - {item.input for item in resolved})
    if missing:
        raise ExportError(f"No schema describes the model's input(s) {', '.join(missing)}.")
    try:
        return parse_schema(Schema(tuple(resolved)).as_json())  # names checked as a file's are
    except SchemaError as exc:
        raise ExportError(str(exc)) from exc


def _tolerance(
    max_prob_diff: float, reason: str | None, figures: parity_check.Parity
) -> dict[str, object]:
    """A tolerance other than the default is recorded with its reason, never silently."""
    measured = (
        f"float32 rounding: LiteRT's own XNNPACK and built-in kernels differ by "
        f"{figures.kernel_prob_spread:.1e} on the parity images"
    )
    return {
        "max_abs_prob_diff": max_prob_diff,
        "default": parity_check.MAX_PROB_DIFF,
        "reason": f"{reason} ({measured})" if reason else f"set with --max-prob-diff; {measured}",
    }


def _parity_refusal(figures: parity_check.Parity, max_prob_diff: float | None) -> str:
    bar = parity_check.MAX_PROB_DIFF if max_prob_diff is None else max_prob_diff
    message = (
        f"Parity with TensorFlow is below the bar (max |dp| <= {bar:g}, top-1 100 %, "
        f"map r >= {parity_check.MIN_CAM_R}): {figures.as_dict()}. Nothing was written."
    )
    if figures.only_probabilities_differ() and figures.kernel_prob_spread:
        suggested = figures.suggested_tolerance()
        message += (
            f" Top-1 and every map agree; only probabilities differ, by "
            f"{figures.max_abs_prob_diff:.1e}, while LiteRT's own two CPU kernels differ by "
            f"{figures.kernel_prob_spread:.1e} on the same images (float32 rounding through a "
            f"deep network). If you accept that, export with --max-prob-diff {suggested:g}: "
            "the tolerance and its reason go into the manifest."
        )
    return message


def _write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def input_size(text: str) -> tuple[int, int]:
    """'224' → (224, 224); '256x192' → (256, 192), height x width."""
    try:
        sides = [int(part) for part in text.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or min(sides) < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: give '224' or 'HxW' (each at least 8)")
    return sides[0], sides[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        help="a .keras or .h5 file (Keras 3 or tf.keras 2), or a SavedModel directory",
    )
    parser.add_argument(
        "--labels",
        required=True,
        help="a file (lines 'code,Display name'; JSON; or Teachable Machine's labels.txt with "
        "lines '0 Benign') or a comma list of codes",
    )
    parser.add_argument("--out", required=True, help="the model directory to write")
    parser.add_argument(
        "--custom-objects",
        default=None,
        metavar="FILE.py",
        help="a Python file defining the model's own layers and functions (its classes and "
        "functions, or a dict named custom_objects); kept beside the model",
    )
    parser.add_argument(
        "--trust-lambda-code",
        action="store_true",
        help="load a .keras file's Lambda layers, which are Python code (Keras' safe_mode "
        "off): only for a file you trust",
    )
    parser.add_argument(
        "--input-size",
        type=input_size,
        default=None,
        help="for a model built for any size (Input((None, None, 3))): the size to serve, "
        "'224' or 'HxW' such as '256x192'",
    )
    parser.add_argument("--name", default=None, help="model name (default: the file's stem)")
    parser.add_argument("--version", default="1")
    parser.add_argument(
        "--target-layer",
        default=None,
        help="layer to explain, 'layer' or 'nested_model/layer' "
        "(default: the last spatial layer that converts)",
    )
    parser.add_argument(
        "--score",
        choices=SCORES,
        default="logit",
        help="class score Grad-CAM differentiates (default: the pre-softmax logit)",
    )
    parser.add_argument(
        "--preprocess",
        choices=PREPROCESSING,
        default="none",
        help="input preprocessing to bake in (keras.applications modes; "
        "'none' when the model rescales inputs itself)",
    )
    parser.add_argument(
        "--metadata",
        default=None,
        help="a JSON schema of the patient fields the model takes beside the image "
        "(see the README, 'Patient metadata')",
    )
    parser.add_argument(
        "--output-layer",
        default=None,
        help="the classifier layer, when the model has several outputs or its last layer is "
        "not the classifier ('layer' or 'nested_model/layer')",
    )
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default="none")
    parser.add_argument(
        "--max-prob-diff",
        type=float,
        default=None,
        help=f"parity bar on probabilities (default {parity_check.MAX_PROB_DIFF:g}); another "
        "value is recorded in the manifest with its reason",
    )
    parser.add_argument("--tolerance-reason", default=None, help="why --max-prob-diff is set")
    parser.add_argument("--demo", action="store_true", help="mark the model as a demo")
    parser.add_argument(
        "--no-keep-source",
        action="store_true",
        help="do not copy the Keras model beside the artifacts "
        "(the reference engine then cannot run)",
    )
    parser.add_argument(
        "--no-fitcheck",
        action="store_true",
        help="skip the fit check (memory tier × vCPU) that follows the export",
    )
    parser.add_argument(
        "--fitcheck-tiers", default="128,256,512,1024", help="memory tiers the fit check tries"
    )
    parser.add_argument(
        "--fitcheck-cpus", default=None, help="only these vCPU shares (default: every one)"
    )
    args = parser.parse_args(argv)
    try:
        model = load_subject(
            args.model,
            args.output_layer,
            args.input_size,
            args.trust_lambda_code,
            args.custom_objects,
        )
        manifest = export(
            model,
            parse_labels(args.labels),
            args.out,
            name=args.name or Path(args.model).stem,
            version=args.version,
            target=args.target_layer,
            score=args.score,
            preprocessing=args.preprocess,
            quantization=args.quantize,
            metadata=json.loads(Path(args.metadata).read_text()) if args.metadata else None,
            demo=args.demo,
            max_prob_diff=args.max_prob_diff,
            tolerance_reason=args.tolerance_reason,
            source=None if args.no_keep_source else args.model,
        )
    except (ExportError, ValueError, OSError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in manifest["artifacts"].items())
    print(f"wrote {args.out}: {sizes}")
    if not args.no_fitcheck:
        from model_store import fitcheck

        print(
            "fit check (real servers in memory and cpu cgroups, each configuration at its own "
            "vCPU share; takes a few minutes):",
            flush=True,
        )
        report = fitcheck.check_with_storage(
            args.out,
            memory_tiers=tuple(int(t) for t in args.fitcheck_tiers.split(",")),
            cpus=tuple(float(c) for c in args.fitcheck_cpus.split(","))
            if args.fitcheck_cpus
            else None,
        )
        print(fitcheck.describe(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
