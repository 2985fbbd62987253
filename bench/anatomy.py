"""Where one function's memory and time go: the figures behind docs/PERFORMANCE.md.

    python -m bench.anatomy memory FUNCTION MODEL_DIR   # anon / page cache, stage by stage
    python -m bench.anatomy time MODEL_DIR              # server timing marks, per engine
    python -m bench.anatomy startup [--baseline COMMIT] # where a cold start's CPU goes

`memory` runs the function's server in a 2 GiB cgroup (page cache dropped first) and reads
the group's memory.stat, and each process's anonymous memory, after it starts, after the
warmup (model loaded, one inference), after the first requests and after 30. `time` sends
the same small PNGs to predict and gradcam under both engines, one server at a time, and
reports the medians of the answers' `timing_ms` marks beside the client's round trip.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from harness import memgroup, servers, storage
from model_store.fitting import load, runs

MIB = memgroup.MIB


@contextmanager
def server(
    function: str,
    model_dir: str,
    engine: str,
    storage_url: str,
    log_dir: Path,
    memory_mb: int | None = None,
) -> Iterator[tuple[requests.Session, servers.Server]]:
    running = load.start_server(
        function,
        model_dir,
        log_dir / f"{function}-{engine}.log",
        engine=engine,
        storage_url=storage_url,
        memory_mb=memory_mb,
    )
    try:
        running.wait_up(90)  # a GET is refused (405): no model loaded
        yield requests.Session(), running
    finally:
        running.stop()


def _anonymous_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory(function: str, model_dir: str, storage_url: str, log_dir: Path) -> list[dict]:
    plan = load.request_plan(31)
    classes = load.class_count(model_dir)
    stages = []

    def stage(name: str, group: memgroup.MemoryGroup) -> None:
        stat = group.stat()
        stages.append(
            {
                "stage": name,
                "anon_mb": round(stat["total_rss"] / MIB, 1),
                "cache_mb": round(stat["total_cache"] / MIB, 1),
                "mapped_mb": round(stat["total_mapped_file"] / MIB, 1),
                "process_anon_mb": [round(_anonymous_mb(p), 1) for p in group.pids()],
            }
        )

    with server(function, model_dir, "litert", storage_url, log_dir, runs.BASELINE_MB) as (
        session,
        running,
    ):
        group, url = running.memory, running.url
        stage("server up, no model", group)
        session.get(url, params={"warmup": "1"}, timeout=60)
        stage("warmup: model loaded, one inference", group)
        for i, upload in enumerate(plan[1:], start=1):
            response = load.post_upload(session, url, upload, function, i % classes)
            response.raise_for_status()
            if i in (1, 2):
                stage(f"after request {i} ({upload.kind})", group)
        stage(f"after {len(plan) - 1} requests", group)
    return stages


def timing(model_dir: str, storage_url: str, log_dir: Path, count: int = 50) -> list[dict]:
    small = [u for u in load.request_plan(count * 2) if u.kind == "small"][:count]
    classes = load.class_count(model_dir)
    rows = []
    for function in ("predict", "gradcam"):
        for engine in ("litert", "keras"):
            with server(function, model_dir, engine, storage_url, log_dir) as (session, running):
                url = running.url
                session.get(url, params={"warmup": "1"}, timeout=120)
                round_trips, marks = [], {}
                for i, upload in enumerate(small * 2):
                    begun = time.perf_counter()
                    response = load.post_upload(session, url, upload, function, i % classes)
                    response.raise_for_status()
                    round_trips.append((time.perf_counter() - begun) * 1000)
                    for name, value in response.json()["timing_ms"].items():
                        marks.setdefault(name, []).append(value)
            medians = {name: round(statistics.median(v), 1) for name, v in marks.items()}
            rows.append(
                {
                    "function": function,
                    "engine": engine,
                    "round_trip_ms": round(statistics.median(round_trips), 1),
                    **medians,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anatomy", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    mem = sub.add_parser("memory")
    mem.add_argument("function", choices=("predict", "gradcam"))
    mem.add_argument("model_dir")
    tim = sub.add_parser("time")
    tim.add_argument("model_dir")
    start = sub.add_parser("startup", help="where a cold start's CPU goes (bench/startup.py)")
    start.add_argument("--baseline", default="b15beb7", help="the commit to compare with")
    start.add_argument("--runs", type=int, default=5)
    start.add_argument("--share", type=float, default=0.167, help="vCPU share for cold starts")
    start.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.what == "startup":
        from bench import startup

        results = startup.measure(args.baseline, args.runs, args.share)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(startup.report(results, args.baseline))
        return 0
    if args.what == "memory" and not memgroup.available():
        print("needs the cgroup v1 memory controller (root)", file=sys.stderr)
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="anatomy-"))
    with storage.storage_emulator(log_dir) as storage_url:
        if args.what == "memory":
            for row in memory(args.function, args.model_dir, storage_url, log_dir):
                print(
                    f"{row['stage']:<40} anon {row['anon_mb']:6.1f} MiB  page cache "
                    f"{row['cache_mb']:6.1f} MiB (mapped {row['mapped_mb']:5.1f})  anon per "
                    f"process (master, worker) {row['process_anon_mb']}"
                )
        else:
            for row in timing(args.model_dir, storage_url, log_dir):
                print(", ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
