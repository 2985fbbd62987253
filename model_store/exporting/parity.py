"""Parity of the LiteRT artifacts against TensorFlow on generated images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermcam import cam
from dermcam.engine import Engine, one_hot
from dermcam.metadata import Schema
from model_store.exporting.sources.base import Reference
from model_store.synthetic import dataset

# float32 artifacts must reach these, or the export is refused.
MAX_PROB_DIFF = 1e-4
MIN_TOP1 = 1.0
MIN_CAM_R = 0.99


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs_prob_diff: float
    top1_agreement: float
    cam_pearson_min: float  # Grad-CAM maps, TensorFlow vs LiteRT
    cam_pp_pearson_min: float  # Grad-CAM++
    # The float32 noise floor: the same predict artifact on LiteRT's XNNPACK and on its
    # built-in kernels. Deep networks round differently in each; TensorFlow is a third.
    kernel_prob_spread: float | None = None

    def passes(self, max_prob_diff: float | None = None) -> bool:
        return (
            self.max_abs_prob_diff <= (MAX_PROB_DIFF if max_prob_diff is None else max_prob_diff)
            and self.top1_agreement >= MIN_TOP1
            and self.cam_pearson_min >= MIN_CAM_R
        )

    def only_probabilities_differ(self) -> bool:
        return self.top1_agreement >= MIN_TOP1 and self.cam_pearson_min >= MIN_CAM_R

    def suggested_tolerance(self) -> float:
        """1.5 × the measured difference, rounded up to one significant digit."""
        value = self.max_abs_prob_diff * 1.5
        if value <= 0:  # nothing differed: no tolerance to widen (and no log of 0)
            return 0.0
        exponent = np.floor(np.log10(value))
        return float(np.ceil(value / 10**exponent) * 10**exponent)

    def as_dict(self) -> dict:
        return {k: round(v, 8) if isinstance(v, float) else v for k, v in asdict(self).items()}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two maps; two constant maps agree (1.0) when they are equal."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    sa, sb = a.std(), b.std()
    if sa < 1e-12 or sb < 1e-12:
        return 1.0 if np.allclose(a, b, atol=1e-6) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def varied_metadata(schema: Schema, count: int) -> list[dict[str, Any]]:
    """Field values for `count` parity images, never one constant vector: each categorical
    field cycles through every category (and missing, where allowed); each numeric field
    sweeps its range, missing every third image where allowed."""
    samples = []
    for i in range(count):
        values: dict[str, Any] = {}
        for k, f in enumerate(schema.fields):
            if f.type == "categorical":
                options: list[Any] = list(f.categories) + ([] if f.required else [None])
                values[f.name] = options[(i + k) % len(options)]
            elif not f.required and (i + k) % 3 == 2:
                values[f.name] = None
            else:
                centre = f.fill if f.fill is not None else 0.0
                low = f.minimum if f.minimum is not None else centre - 1.0
                high = f.maximum if f.maximum is not None else centre + 1.0
                values[f.name] = low + (high - low) * ((0.13 + 0.37 * i + 0.21 * k) % 1.0)
        samples.append(values)
    return samples


def images_needed(schema: Schema | None, count: int) -> int:
    """Enough images for every category of every field to appear at least once."""
    if schema is None:
        return count
    widths = [len(f.categories) + (0 if f.required else 1) for f in schema.fields]
    return max([count, *widths])


def unfused_reference() -> None:
    """TensorFlow's reference graphs without Grappler's remapper. Its oneDNN fusions round
    otherwise: on a trained 6-block ViT (bench/rollout.py) they put TensorFlow's
    probabilities 4.6e-3 away from onnxruntime's on the file, LiteRT's and TensorFlow's own
    unfused ones (which agree to 1.2e-7), with oneDNN on at any ISA (AVX-512 or capped to
    AVX2) and not with TF_ENABLE_ONEDNN_OPTS=0: the gate would refuse an artifact for the
    reference's error. Process-wide; the exporter's process runs no other TensorFlow."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"remapping": False})


def measure(
    reference: Reference,
    engine: Engine,
    count: int = 6,
    seed: int = 2024,
    schema: Schema | None = None,
) -> Parity:
    """Run TensorFlow (GradientTape, no rewrites) and the artifacts on `count` images (more
    when a metadata schema needs them to show every category), with varied metadata.

    Maps are compared before the ReLU (sum_k w_k A_k), so a class the model does not see in
    an image still has a map to compare rather than an all-zero one."""
    h, w = engine.manifest.height, engine.manifest.width
    classes = len(engine.manifest.labels)
    count = images_needed(schema, count)
    images, _, _ = dataset(seed, count, max(h, w))
    extras = [schema.encode(v).inputs for v in varied_metadata(schema, count)] if schema else []
    prob_diff, top1, r_cam, r_pp = 0.0, 0, [], []
    for i, image in enumerate(images):
        tensor = image[None, :h, :w, :].astype(np.float32)
        extra = extras[i] if extras else {}
        probs = engine.predict(tensor, extra)
        for target in sorted({int(np.argmax(probs)), i % classes}):
            ref = reference(tensor, one_hot(target, classes), extra)
            got = engine.explain(tensor, target, extra)
            prob_diff = max(prob_diff, float(np.abs(ref.probabilities - got.probabilities).max()))
            prob_diff = max(prob_diff, float(np.abs(ref.probabilities - probs).max()))
            for method, sink in (("gradcam", r_cam), ("gradcam++", r_pp)):
                sink.append(
                    pearson(
                        cam.linear_map(ref.activations, ref.gradients, method),
                        cam.linear_map(got.activations, got.gradients, method),
                    )
                )
        top1 += int(np.argmax(ref.probabilities)) == int(np.argmax(probs))
    tensors = [image[None, :h, :w, :].astype(np.float32) for image in images]
    spread = kernel_spread(engine.manifest.artifact_path("predict"), tensors, extras)
    return Parity(count, prob_diff, top1 / count, min(r_cam), min(r_pp), spread)


def against_original(subject: Any, engine: Engine, count: int, preprocessing: str) -> dict | None:
    """For a converted format (ONNX): the artifacts' probabilities against the original
    file's own runtime on generated images; None for a source TensorFlow runs natively."""
    original = getattr(subject, "original_parity", None)
    if original is None:
        return None
    h, w = engine.manifest.height, engine.manifest.width
    images, _, _ = dataset(2025, count, max(h, w))
    return original(engine, [i[None, :h, :w, :].astype(np.float32) for i in images], preprocessing)


def original_passes(figures: dict, max_prob_diff: float | None) -> bool:
    bar = MAX_PROB_DIFF if max_prob_diff is None else max_prob_diff
    return figures["max_abs_prob_diff"] <= bar and figures["top1_agreement"] >= MIN_TOP1


def kernel_spread(
    predict_path: Path, tensors: list[np.ndarray], extras: list[dict[str, np.ndarray]]
) -> float:
    """max |Δp| between LiteRT's XNNPACK delegate and its built-in kernels on `tensors`."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def runner(resolver: OpResolverType) -> Callable:
        interpreter = Interpreter(
            model_path=str(predict_path), num_threads=1, experimental_op_resolver_type=resolver
        )
        return interpreter.get_signature_runner("serving_default")

    xnnpack = runner(OpResolverType.AUTO)
    builtin = runner(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    spread = 0.0
    for i, tensor in enumerate(tensors):
        inputs = {"image": tensor, **(extras[i] if extras else {})}
        a, b = xnnpack(**inputs)["probabilities"], builtin(**inputs)["probabilities"]
        spread = max(spread, float(np.abs(a - b).max()))
    return spread


def tolerance(max_prob_diff: float, reason: str | None, figures: Parity) -> dict[str, object]:
    """A tolerance other than the default is recorded with its reason, never silently."""
    measured = (
        f"float32 rounding: LiteRT's own XNNPACK and built-in kernels differ by "
        f"{figures.kernel_prob_spread:.1e} on the parity images"
    )
    return {
        "max_abs_prob_diff": max_prob_diff,
        "default": MAX_PROB_DIFF,
        "reason": f"{reason} ({measured})" if reason else f"set with --max-prob-diff; {measured}",
    }


def refusal(figures: Parity, max_prob_diff: float | None) -> str:
    bar = MAX_PROB_DIFF if max_prob_diff is None else max_prob_diff
    message = (
        f"Parity with TensorFlow is below the bar (max |dp| <= {bar:g}, top-1 100 %, "
        f"map r >= {MIN_CAM_R}): {figures.as_dict()}. Nothing was written."
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
