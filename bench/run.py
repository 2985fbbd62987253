"""make bench: every model × function × engine × configuration (memory tier × vCPU share), in
one run, on this machine.

    python -m bench.run [--models demo,demo-metadata,mobilenetv2,efficientnetb0,resnet50]
                        [--engines litert,keras] [--functions predict,gradcam]
                        [--tiers 128,256,512] [--warm 60] [--no-quant] [--no-startup]

Each configuration runs at its memory limit and its vCPU share
(model_store.fitting.exhaustive.explore):
the whole-core run, each share's 2 GiB baseline, then the tiers from the smallest up, at the
default share and the `--cpu` overrides, until a tier holds (1 GiB too when none of --tiers
does). Then where a cold start's CPU goes against the code of b15beb7 (bench.startup). Writes
bench/results.json and bench/results.md, and the README's headline. Figures are medians of
this run on this machine; ratios compare what was measured in the same run.
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

from bench import models, quant, report, startup
from harness import memgroup, storage
from model_store.fitting import exhaustive, load, runs

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
    parser.add_argument(
        "--models", default="demo,demo-metadata,mobilenetv2,efficientnetb0,resnet50"
    )
    parser.add_argument("--engines", default="litert,keras")
    parser.add_argument("--functions", default="predict,gradcam")
    parser.add_argument("--tiers", default=",".join(map(str, exhaustive.TIERS_MB)))
    parser.add_argument("--warm", type=int, default=60, help="warm requests per run")
    parser.add_argument("--no-quant", action="store_true", help="skip quantisation figures")
    parser.add_argument("--no-startup", action="store_true", help="skip the startup anatomy")
    parser.add_argument("--baseline", default="b15beb7", help="code the startup is compared to")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args(argv)

    names = args.models.split(",")
    tiers = [int(t) for t in args.tiers.split(",")]
    started = dt.datetime.now(dt.UTC)
    print(f"preparing models: {', '.join(names)}", flush=True)
    dirs = {name: models.ensure(name) for name in names}
    plan = load.request_plan(args.warm + 1)
    results = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": commit(),
        "warm_requests": args.warm,
        "tiers_mb": tiers,
        "runs": [],
        "quantization": [],
        "startup": None,
    }
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    with storage.storage_emulator(log_dir) as storage_url:
        for name in names:
            for function in args.functions.split(","):
                for engine in args.engines.split(","):

                    def record(run: runs.Run, name: str = name) -> None:
                        row = {"model": name, **run.as_dict()}
                        results["runs"].append(row)
                        print(report.one_line(row), flush=True)

                    exhaustive.explore(
                        function,
                        dirs[name],
                        plan,
                        engine,
                        storage_url,
                        log_dir,
                        (*tiers, *exhaustive.LARGER_TIERS_MB),
                        record,
                    )
        if not args.no_quant:
            image_only = [n for n in names if n != "demo-metadata"]  # quantised: image models
            results["quantization"] = quant.measure(image_only, plan, storage_url, log_dir)
    if not args.no_startup:
        results["startup"] = startup.measure(args.baseline, runs=5, share=0.167)
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
