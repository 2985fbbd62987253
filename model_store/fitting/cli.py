"""Which configuration (memory tier × vCPU) should each function get, for a given exported
model? Measured, not guessed.

    python -m model_store.fitcheck MODEL_DIR [--functions predict,gradcam] [--warm 30]
                                   [--max-p50-ms 300] [--max-cold-s 3]

Each run starts the real functions-framework server of a function inside a cgroup memory
group at a tier **and** a cpu group with that configuration's vCPU share (a CFS quota; page
cache dropped first), times the cold start (spawn → first 200 to a request as the page sends
it) and the CPU it took (cpuacct), sends warm requests mixing small PNGs and 12-megapixel JPEG
photos (distinct images, so gradcam never answers from its cache), and reads peak memory and
OOM kills. A configuration fits when it had no OOM kill, every request answered 200 and its
p50 stayed within 1.25× of the same function at 2 GiB **with the same vCPU share** (so the two
differ only in memory); the whole-core run shows the CPU's own effect. Memory tiers are run
at 80 % of their size: what fits there fits the tier with a 20 % margin. Each configuration
that fits gets its billed cost per 1,000 requests (model_store.tiers), and the cheapest that
meets the latency targets is recommended. bench/ drives this across models and engines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model_store.fitting import tiers
from model_store.fitting.exhaustive import LARGER_TIERS_MB, TIERS_MB, check_with_storage
from model_store.fitting.report import describe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.fitcheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir")
    parser.add_argument("--functions", default="predict,gradcam")
    parser.add_argument("--warm", type=int, default=30, help="warm requests per run")
    parser.add_argument("--json", help="also write the full report here")
    parser.add_argument("--max-p50-ms", type=float, default=tiers.MAX_WARM_P50_MS)
    parser.add_argument("--max-cold-s", type=float, default=tiers.MAX_COLD_START_S)
    parser.add_argument(
        "--tiers",
        default=",".join(map(str, (*TIERS_MB, *LARGER_TIERS_MB))),
        help="memory tiers to try, MiB, smallest first",
    )
    parser.add_argument("--cpus", default=None, help="only these vCPU shares (default: all)")
    args = parser.parse_args(argv)
    report = check_with_storage(
        args.model_dir,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
