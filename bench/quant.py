"""Quantisation figures: size, memory, latency and agreement of float16 / dynamic-int8
artifacts with the float32 ones of the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import models
from dermcam import cam
from dermcam.engine import LiteRTEngine
from model_store.exporting.parity import pearson
from model_store.fitting import runs
from model_store.synthetic import dataset

VARIANTS = ("float16", "dynamic-int8")
AGREEMENT_IMAGES = 40


def _size_mb(directory: Path) -> float:
    return round(sum(p.stat().st_size for p in directory.glob("*.tflite")) / 1e6, 2)


def agreement(reference_dir: Path, variant_dir: Path, count: int = AGREEMENT_IMAGES) -> dict:
    """Top-1 agreement and Grad-CAM map correlation (top class of float32) on generated images."""
    reference, variant = LiteRTEngine(str(reference_dir)), LiteRTEngine(str(variant_dir))
    size = reference.manifest.height
    images, _, _ = dataset(515, count, size)
    same, r = 0, []
    for image in images:
        tensor = image[None].astype(np.float32)
        ref = reference.explain(tensor, 0)
        top = int(np.argmax(ref.probabilities))
        ref, got = reference.explain(tensor, top), variant.explain(tensor, top)
        same += top == int(np.argmax(got.probabilities))
        r.append(
            pearson(
                cam.class_map(ref.activations, ref.gradients),
                cam.class_map(got.activations, got.gradients),
            )
        )
    return {
        "top1_agreement": round(same / count, 3),
        "cam_r_median": round(float(np.median(r)), 4),
        "cam_r_min": round(float(np.min(r)), 4),
    }


def measure(names: list[str], plan: list, storage_url: str, log_dir: Path) -> list[dict]:
    rows = []
    for name in names:
        reference = models.ensure(name)
        for variant in VARIANTS:
            directory = models.ensure(name, variant)
            row = {
                "model": name,
                "quantization": variant,
                "size_mb": _size_mb(directory),
                "float32_size_mb": _size_mb(reference),
                **agreement(reference, directory),
            }
            for function in ("predict", "gradcam"):
                run = runs.run_function(
                    function,
                    directory,
                    runs.BASELINE_MB,
                    plan,
                    "litert",
                    storage_url,
                    log_dir,
                    cpu=runs.WHOLE_CORE,
                )
                row[function] = {
                    "peak_mb": run.peak_mb,
                    "p50_ms": run.p50(),
                    "compute_ms": run.compute_ms,
                    "errors": run.errors,
                }
            print(f"{name} {variant}: {row}", flush=True)
            rows.append(row)
    return rows
