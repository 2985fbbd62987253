"""The project's claim on a real model, in one run: the HAM10000 Xception (sklesion) served
at the configuration its fit check recommends, beside the old way with this very model.

    python -m bench.realmodel [--json bench/realmodel.json] [--no-quant]

1. The predicted fit check of the float32 export (recorded in its manifest, where deploy.sh
   reads it): per function the recommended memory × vCPU, its cold start, warm p50 for small
   PNGs and 12-megapixel JPEGs, and $ / 1000 requests, as the verifying run measured them.
2. The old way, in the same run: TensorFlow in the process (the Keras reference engine: the
   model loaded, then one Grad-CAM per request) as a real server at 512 MiB (0.333 vCPU, what
   that tier gives) and at 2 GiB (1 vCPU).
3. float16 and dynamic-int8 exports: their fit check, and how far they agree with float32 on
   the 528 isic-uda1 photographs (top-1, max |Δp|, Grad-CAM map r).
Writes bench/realmodel.json and prints the rows README and docs/models/ham10000.md quote.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness import storage
from model_store import catalog
from model_store.fitting import cli as fitting
from model_store.fitting.load import request_plan
from model_store.fitting.report import recommendation
from model_store.fitting.runs import run_function

ROOT = Path(__file__).resolve().parents[1]
ISIC = ROOT / "data" / "isic-uda1"


def recommended(report: dict) -> dict:
    rows = {}
    for function, result in report.items():
        best, _ = recommendation(result)
        run = next(
            (
                r
                for r in result["runs"]
                if best and r["tier_mb"] == best.memory_mb and r["cpu"] == best.cpu
            ),
            None,
        )
        rows[function] = {
            "memory_mb": best.memory_mb if best else None,
            "cpu": best.cpu if best else None,
            "cold_start_s": best.cold_start_s if best else None,
            "p50_small_ms": (run or {}).get("latency_ms", {}).get("small", {}).get("p50"),
            "p50_large_ms": (run or {}).get("latency_ms", {}).get("large", {}).get("p50"),
            "cost_per_1000": best.cost_per_1000 if best else None,
            "peak_mb": (run or {}).get("peak_mb"),
            "whole_core": result["whole_core"],
        }
    return rows


def old_way(model_dir: Path) -> list[dict]:
    """TensorFlow in the process, as the seed ran it, at 512 MiB and at 2 GiB."""
    plan = request_plan(31)
    found = []
    with tempfile.TemporaryDirectory() as tmp, storage.storage_emulator(Path(tmp)) as url:
        for function in ("predict", "gradcam"):
            for tier, cpu in ((512, 0.333), (2048, 1.0)):
                # The whole tier, no margin: the seed's 512 MB host, its best chance.
                run = run_function(
                    function, model_dir, tier, plan, "keras", url, cpu=cpu, tier_mb=tier,
                    cold_timeout_s=180,
                )  # fmt: skip
                found.append(
                    {
                        "function": function,
                        "memory_mb": tier,
                        "cpu": cpu,
                        "cold_start_s": run.cold_start_s,
                        "peak_mb": run.peak_mb,
                        "oom_kills": run.oom_kills,
                        "errors": run.errors,
                        "p50_small_ms": run.latency_ms.get("small", {}).get("p50"),
                        "p50_large_ms": run.latency_ms.get("large", {}).get("p50"),
                        "cost_per_1000": run.cost_per_1000,
                        "note": run.note,
                    }  # fmt: skip
                )
                print(found[-1], flush=True)
    return found


def agreement(reference: Path, other: Path) -> dict:
    """Top-1 agreement, max |Δp| and the Grad-CAM maps' Pearson r on the real photographs,
    each with its age and sex."""
    from dermcam import cam, imaging
    from dermcam.engine import LiteRTEngine
    from dermcam.inputs import image_input
    from model_store.exporting.parity import pearson

    a, b = LiteRTEngine(str(reference)), LiteRTEngine(str(other))
    with open(ISIC / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    top, diffs, rs = [], [], []
    for row in rows:
        data = (ISIC / "images" / f"{row['image']}.jpg").read_bytes()
        tensor = imaging.decode(data, 50_000_000, image_input(a.manifest)).tensor
        fields = {k: v for k, v in (("sex", row["sex"]), ("age", row["age_approx"])) if v}
        extras = a.manifest.metadata.encode(fields).inputs
        pa, pb = a.predict(tensor, extras), b.predict(tensor, extras)
        top.append(int(np.argmax(pa)) == int(np.argmax(pb)))
        diffs.append(float(np.abs(pa - pb).max()))
        klass = int(np.argmax(pa))
        ea, eb = a.explain(tensor, klass, extras), b.explain(tensor, klass, extras)
        rs.append(
            pearson(
                cam.class_map(ea.activations, ea.gradients, "gradcam"),
                cam.class_map(eb.activations, eb.gradients, "gradcam"),
            )
        )
    return {
        "images": len(rows),
        "top1_agreement": round(float(np.mean(top)), 4),
        "max_abs_prob_diff": round(max(diffs), 4),
        "median_abs_prob_diff": round(float(np.median(diffs)), 5),
        "cam_r_median": round(float(np.median(rs)), 4),
        "cam_r_min": round(float(np.min(rs)), 4),
        "artifact_mb": {
            k: round(v["bytes"] / 1e6, 1)
            for k, v in json.loads((other / "manifest.json").read_text())["artifacts"].items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realmodel", description=__doc__)
    parser.add_argument("--json", default=str(ROOT / "bench" / "realmodel.json"))
    parser.add_argument("--no-quant", action="store_true")
    args = parser.parse_args(argv)
    results: dict = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    model_dir = catalog.ensure("ham10000")
    report = fitting.run(model_dir, "predicted", warm=30)
    fitting.record(model_dir, report, "predicted", warm=30)
    print(fitting.describe(report), flush=True)
    results["float32"] = recommended(report)
    results["old_way"] = old_way(model_dir)
    for quantization in () if args.no_quant else ("float16", "dynamic-int8"):
        folder = catalog.ensure("ham10000", quantization=quantization)
        quant_report = fitting.run(folder, "predicted")
        print(quantization, fitting.describe(quant_report), flush=True)
        results[quantization] = {
            "fitcheck": recommended(quant_report),
            "agreement": agreement(model_dir, folder),
        }
        print(quantization, results[quantization]["agreement"], flush=True)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
