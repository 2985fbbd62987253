"""What the trust block costs predict: the HAM10000 export before it (recipe 1: no features
output, no trust block) beside the calibrated one (recipe 2: features, calibration, the
quality bounds and the k-NN scope rule), at the configuration its fit check recommends,
alternated in one run so both meet the same machine.

    python -m bench.trustcost [--rounds 3] [--requests 40] [--json bench/trustcost.json]

Both servers run with DERMCAM_SCOPE=measure (the fit check's setting): every generated upload
is screened and answered, so the whole path is timed. Reports per model the medians over
rounds of the warm p50 (small PNGs and 12-megapixel JPEGs) and of the cgroup's peak memory,
and the calibrated one's ratio and difference to the other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from model_store import catalog
from model_store.fitting.load import request_plan
from model_store.fitting.runs import run_function

MEMORY_MB, CPU = 512, 0.5  # predict's recommendation for HAM10000 (bench/realmodel.json)


def before_trust(calibrated: Path, scratch: Path) -> tuple[Path, str]:
    """The baseline: the recipe-1 export (the same wheel, no trust block, no features output)
    where an earlier export left it in the cache; else a copy of the calibrated one with its
    trust block taken out (the features output, a mean over the target activations, stays)."""
    folder = calibrated.parent / calibrated.name.replace("-r2", "")
    if (folder / "manifest.json").is_file():
        return folder, "recipe-1 export"
    copy = Path(shutil.copytree(calibrated, scratch / "without-trust"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.pop("trust", None)
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return copy, "recipe-2 export without its trust block"


def screening_cpu_ms(calibrated: Path, plan: list, repeats: int = 50) -> dict[str, float]:
    """CPU time of each step the trust block adds, in this process, per kind of upload
    (medians over the plan's uploads): what the wall-clock ratio should show under its noise."""
    from dermcam import imaging, quality, trust
    from dermcam.manifest import read_manifest

    manifest = read_manifest(calibrated)
    block, codes = manifest.trust, manifest.codes
    rng = np.random.default_rng(0)
    features = rng.normal(size=block.scope.reference.shape[1]).astype(np.float32)
    raw = rng.dirichlet(np.ones(len(codes)))

    def cpu_ms(step) -> float:  # noqa: ANN001 - a callable of nothing
        started = time.process_time()
        for _ in range(repeats):
            step()
        return 1000 * (time.process_time() - started) / repeats

    found: dict[str, float] = {}
    for kind in ("small", "large"):
        decoded = imaging.decode(next(u for u in plan if u.kind == kind).data, 200_000_000)
        found[f"quality_{kind}"] = round(
            cpu_ms(lambda d=decoded: quality.measure(d.image, d.width, d.height)), 3
        )
    found["scope_knn"] = round(cpu_ms(lambda: block.scope.declines(features)), 3)
    found["calibrate_decide_set"] = round(cpu_ms(lambda: trust.assess(block, raw, codes)), 3)
    return found


def measure(rounds: int, requests: int) -> dict:
    calibrated = catalog.ensure("ham10000")
    log_dir = Path(tempfile.mkdtemp(prefix="trustcost-"))
    baseline, baseline_is = before_trust(calibrated, log_dir)
    models = {"before": baseline, "calibrated": calibrated}
    plan = request_plan(requests)
    figures: dict[str, dict[str, list[float]]] = {
        name: {"p50_small_ms": [], "p50_large_ms": [], "peak_mb": []} for name in models
    }
    for _ in range(rounds):
        for name, folder in models.items():
            run = run_function(
                "predict", folder, MEMORY_MB, plan, cpu=CPU, tier_mb=MEMORY_MB, log_dir=log_dir
            )
            if run.errors or not run.complete:
                raise SystemExit(f"{name}: {run.errors} errors, {run.note}")
            figures[name]["p50_small_ms"].append(run.latency_ms["small"]["p50"])
            figures[name]["p50_large_ms"].append(run.latency_ms["large"]["p50"])
            figures[name]["peak_mb"].append(run.peak_mb)
    medians = {
        n: {k: round(statistics.median(v), 1) for k, v in f.items()} for n, f in figures.items()
    }
    before, after = medians["before"], medians["calibrated"]
    return {
        "date": dt.date.today().isoformat(),
        "baseline": baseline_is,
        "configuration": {
            "memory_mb": MEMORY_MB,
            "cpu": CPU,
            "rounds": rounds,
            "requests": requests,
        },
        "medians": medians,
        "screening_cpu_ms": screening_cpu_ms(calibrated, plan),
        "runs": figures,
        "p50_small_ratio": round(after["p50_small_ms"] / before["p50_small_ms"], 3),
        "p50_large_ratio": round(after["p50_large_ms"] / before["p50_large_ms"], 3),
        "peak_mb_added": round(after["peak_mb"] - before["peak_mb"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trustcost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--json", default="bench/trustcost.json")
    args = parser.parse_args(argv)
    found = measure(args.rounds, args.requests)
    Path(args.json).write_text(json.dumps(found, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: found[k]
                for k in (
                    "medians",
                    "p50_small_ratio",
                    "p50_large_ratio",
                    "peak_mb_added",
                    "screening_cpu_ms",
                )
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
