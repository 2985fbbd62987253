"""make bench: every function × engine × model × memory tier, in one run, on this machine.

    python -m bench.run [--models demo,mobilenetv2,efficientnetb0,resnet50]
                        [--engines litert,keras] [--functions predict,gradcam]
                        [--tiers 128,256,512] [--warm 100] [--no-quant]

A function that fits none of --tiers is also run at 1024 MiB, so every engine gets a tier
and a cost. Writes bench/results.json and bench/results.md. Figures are medians of this run on this
machine; ratios compare engines measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import models, quant, report
from devstack import stack as devstack
from model_store import fitcheck, memgroup

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cgroup_v1": memgroup.available(),
    }


def commit() -> str:
    """The code measured: the commit, marked dirty when the work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=HERE,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", default="demo,mobilenetv2,efficientnetb0,resnet50")
    parser.add_argument("--engines", default="litert,keras")
    parser.add_argument("--functions", default="predict,gradcam")
    parser.add_argument("--tiers", default=",".join(map(str, fitcheck.TIERS_MB)))
    parser.add_argument("--warm", type=int, default=100, help="warm requests per run")
    parser.add_argument("--no-quant", action="store_true", help="skip quantisation figures")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args(argv)

    names = args.models.split(",")
    tiers = [int(t) for t in args.tiers.split(",")]
    started = dt.datetime.now(dt.UTC)
    print(f"preparing models: {', '.join(names)}", flush=True)
    dirs = {name: models.ensure(name) for name in names}
    plan = fitcheck.request_plan(args.warm + 1)
    results = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit(),
        "warm_requests": args.warm,
        "tiers_mb": tiers,
        "runs": [],
        "quantization": [],
    }
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    with devstack.storage_emulator(log_dir) as storage_url:
        for name in names:
            for function in args.functions.split(","):
                for engine in args.engines.split(","):
                    runs = []
                    for limit in [fitcheck.BASELINE_MB, *tiers, *fitcheck.LARGER_TIERS_MB]:
                        if limit in fitcheck.LARGER_TIERS_MB and any(
                            run.fits(runs[0]) for run in runs[1:]
                        ):
                            break  # a smaller tier held: the larger ones tell nothing new
                        runs.append(
                            fitcheck.run_function(
                                function, dirs[name], limit, plan, engine, storage_url, log_dir
                            )
                        )
                        row = {"model": name, **runs[-1].as_dict()}
                        results["runs"].append(row)
                        print(report.one_line(row), flush=True)
        if not args.no_quant:
            results["quantization"] = quant.measure(names, plan, storage_url, log_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report.markdown(results))
    if out.resolve() == HERE:
        report.update_readme(results, HERE.parent / "README.md")
    print(f"\nwrote {out / 'results.md'} and results.json (server logs in {log_dir})")
    print(report.headline(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
