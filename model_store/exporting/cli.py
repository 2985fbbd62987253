"""Export a Keras image classifier to the LiteRT artifacts dermcam serves.

    python -m model_store.export MODEL --labels LABELS --out DIR [options]

Writes predict.tflite, gradcam.tflite and manifest.json (and a copy of the source model for
the reference engine), after checking the artifacts against TensorFlow on generated images.
Nothing is written when float32 parity fails. A fit check follows unless told not to.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dermcam import resize as image_resize
from dermcam.keras_engine import PREPROCESSING
from model_store.exporting import parity as parity_check
from model_store.exporting.errors import ExportError
from model_store.exporting.export import SCORES, export
from model_store.exporting.graph.convert import QUANTIZATIONS
from model_store.exporting.labels import parse_labels
from model_store.exporting.sources import load_subject


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
        "--prefix-tokens",
        type=int,
        default=None,
        metavar="K",
        help="a transformer (.onnx): the tokens before the patches (class, distillation, "
        "registers), dropped when the rest fold into the grid (default: read from the "
        "model, tokens minus its patch grid)",
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
        "--resize",
        choices=list(image_resize.RESIZES),
        default=image_resize.DEFAULT,
        help="how the model's training pipeline decoded and resized its images, so the "
        "functions do the same: tf-bilinear for TensorFlow's defaults (tf.io.decode_jpeg + "
        "tf.image.resize; Keras' image_dataset_from_directory), pil-bilinear for "
        "torchvision's Resize, pil-nearest for keras.utils.load_img; default: "
        f"{image_resize.DEFAULT} (dermcam's own, fast on large photos)",
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
        "--fitcheck",
        choices=("predicted", "exhaustive", "none"),
        default="predicted",
        help="the fit check (memory tier × vCPU) that follows the export: predicted from one "
        "whole-core run and verified (default, a minute or two), every configuration run "
        "(exhaustive: the bench's), or none; its recommendation goes into the manifest",
    )
    parser.add_argument(
        "--no-fitcheck",
        action="store_const",
        const="none",
        dest="fitcheck",
        help="the same as --fitcheck none",
    )
    parser.add_argument(
        "--fitcheck-tiers", default="128,256,512,1024", help="memory tiers the fit check tries"
    )
    parser.add_argument(
        "--fitcheck-cpus", default=None, help="only these vCPU shares (default: every one)"
    )
    parser.add_argument(
        "--fitcheck-warm",
        type=int,
        default=30,
        help="warm requests per fit-check run (fewer is quicker, its p50 rougher)",
    )
    args = parser.parse_args(argv)
    if args.fitcheck_warm < 1:
        parser.error("--fitcheck-warm: at least 1 (a warm p50 needs a warm request)")
    try:
        model = load_subject(
            args.model,
            args.output_layer,
            args.input_size,
            args.trust_lambda_code,
            args.custom_objects,
            args.prefix_tokens,
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
            resize=args.resize,
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
    if args.fitcheck != "none":
        from model_store.fitting import cli as fitting

        how = (
            "each function measured once on a whole core, every configuration predicted, the "
            "recommended one and the next cheaper run for real"
            if args.fitcheck == "predicted"
            else "every configuration run for real; takes a few minutes"
        )
        print(f"fit check (real servers in memory and cpu cgroups; {how}):", flush=True)
        result = fitting.run(
            args.out,
            args.fitcheck,
            warm=args.fitcheck_warm,
            memory_tiers=tuple(int(t) for t in args.fitcheck_tiers.split(",")),
            cpus=tuple(float(c) for c in args.fitcheck_cpus.split(","))
            if args.fitcheck_cpus
            else None,
        )
        print(fitting.describe(result))
        fitting.record(args.out, result, args.fitcheck, args.fitcheck_warm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
