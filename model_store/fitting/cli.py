"""Which configuration (memory tier × vCPU) should each function get, for a given exported
model? Measured, not guessed.

    python -m model_store.fitcheck MODEL_DIR [--fitcheck predicted|exhaustive]
        [--functions predict,gradcam] [--warm 30] [--max-p50-ms 300] [--max-cold-s 3]
        [--tiers 128,256,512,1024] [--cpus 0.333,1] [--record] [--json FILE]

Every run is the real functions-framework server of a function in a cgroup memory group and a
cpu group with the configuration's vCPU share (a CFS quota; page cache dropped first). A
configuration fits when nothing was OOM-killed, every request answered 200 and its p50 stayed
within 1.25× of the same share with ample memory; tiers are run at 80 % of their size, so what
fits there fits with a 20 % margin. The cheapest that fits and meets the latency targets (warm
p50, cold start) at Cloud Run's prices (model_store.fitting.tiers) is recommended.

`predicted` (the default): each function measured once on a whole core (model_store.fitting.
profile), every configuration predicted from that (model_store.fitting.predicted), then only
the recommended one and the next cheaper run for real (the cheaper must miss). `exhaustive`:
every configuration run for real, smallest memory first (model_store.fitting.exhaustive;
what the bench drives and what the prediction is checked against). `--record` keeps the
recommendation in the manifest (`fitcheck`), where deploy.sh finds it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from dermcam.manifest import MANIFEST
from model_store.fitting import exhaustive, predicted, tiers
from model_store.fitting.report import describe, recommendation

MODES = ("predicted", "exhaustive")


def run(
    model_dir: str | Path,
    mode: str = "predicted",
    functions: tuple[str, ...] = ("predict", "gradcam"),
    warm: int = 30,
    **options: object,
) -> dict[str, dict]:
    check = predicted.check_with_storage if mode == "predicted" else exhaustive.check_with_storage
    return check(model_dir, functions, warm, **options)


def record(model_dir: str | Path, report: dict[str, dict], mode: str, warm: int) -> None:
    """The recommendation per function, kept in the manifest for deploy.sh (with the warm
    requests each run sent: fewer, a rougher p50)."""
    path = Path(model_dir) / MANIFEST
    manifest = json.loads(path.read_text())
    kept = {}
    for function, result in report.items():
        best, _ = recommendation(result)
        kept[function] = {
            "recommended": None if best is None else best.__dict__,
            "whole_core": {
                k: result["whole_core"].get(k) for k in ("cold_start_s", "startup_cpu_s")
            },
        }
    manifest["fitcheck"] = {
        "mode": mode,
        "date": dt.date.today().isoformat(),
        "warm_requests": warm,
        **kept,
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.fitcheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir")
    parser.add_argument("--fitcheck", choices=MODES, default="predicted", dest="mode")
    parser.add_argument("--functions", default="predict,gradcam")
    parser.add_argument("--warm", type=int, default=30, help="warm requests per run")
    parser.add_argument("--json", help="also write the full report here")
    parser.add_argument(
        "--record", action="store_true", help="the recommendation into the manifest"
    )
    parser.add_argument("--max-p50-ms", type=float, default=tiers.MAX_WARM_P50_MS)
    parser.add_argument("--max-cold-s", type=float, default=tiers.MAX_COLD_START_S)
    parser.add_argument(
        "--tiers",
        default=",".join(map(str, predicted.DEFAULT_TIERS_MB)),
        help="memory tiers to try, MiB",
    )
    parser.add_argument("--cpus", default=None, help="only these vCPU shares (default: all)")
    args = parser.parse_args(argv)
    if args.warm < 1:
        parser.error("--warm: at least 1 (a warm p50 needs a warm request)")
    report = run(
        args.model_dir,
        args.mode,
        tuple(args.functions.split(",")),
        args.warm,
        memory_tiers=tuple(int(t) for t in args.tiers.split(",")),
        cpus=tuple(float(c) for c in args.cpus.split(",")) if args.cpus else None,
        max_p50_ms=args.max_p50_ms,
        max_cold_s=args.max_cold_s,
    )
    print(describe(report, args.max_p50_ms, args.max_cold_s))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.record:
        record(args.model_dir, report, args.mode, args.warm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
