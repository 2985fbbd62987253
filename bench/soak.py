"""make soak: each function at its deployed configuration answers thousands of requests; does
its memory stay put?

    python -m bench.soak [--requests 5000] [--model-dir DIR]
                         [--predict 128:0.333] [--gradcam 256:0.333]

Each function's real server runs in a memory group at its tier and a cpu group at its vCPU
share (deploy.sh's defaults unless told), against fake-gcs-server. Requests mix small PNGs and
12-megapixel JPEGs from a pool, so repeats happen: gradcam sees cache hits as well as misses,
both methods and every class. Every 100 requests the server's processes' RSS and the group's
usage are read; the slope past warm-up (the first 10 %) and over the second half are
reported per 1,000 requests. A growing worker (a leak) keeps its slope to the end; the steps
glibc's heap takes until every request shape has been seen flatten out. Samples are read
after the server has been idle for SETTLE_S, so a request still being torn down (its buffers
not yet freed) does not count as growth.
Writes bench/soak.json and prints the figures docs/RELIABILITY.md quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from harness import cpugroup, memgroup, storage
from model_store.fitting import load

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {"predict": (128, 0.333), "gradcam": (256, 0.333)}  # deploy.sh's defaults
METHODS = ("gradcam", "gradcam++")
SETTLE_S = 0.3  # idle time before a memory sample: the worker finishes the last request


def slope_per_1000(points: list[tuple[int, float]], skip: float = 0.1) -> float | None:
    """Least-squares slope (MiB per 1,000 requests) past the first `skip` of the run."""
    if len(points) < 3:
        return None
    start = int(points[-1][0] * skip)
    kept = [(n, v) for n, v in points if n >= start]
    if len(kept) < 3:
        return None
    x, y = np.array([n for n, _ in kept], float), np.array([v for _, v in kept], float)
    return round(float(np.polyfit(x, y, 1)[0] * 1000), 3)


def soak(
    function: str, model_dir: Path, memory_mb: int, cpu: float, count: int, storage_url: str
) -> dict:
    pool = load.request_plan(150)  # 100 small PNGs, 50 12-MP JPEGs, reused
    server = load.start_server(
        function,
        model_dir,
        Path(tempfile.mkdtemp(prefix="soak-")) / f"{function}.log",
        storage_url=storage_url,
        memory_mb=memory_mb,
        cpu_share=cpu,
    )
    memory, url = server.memory, server.url
    session = requests.Session()
    rng = np.random.default_rng(3)
    classes = load.class_count(model_dir)
    points, errors, statuses, cached = [], 0, {}, 0
    started = time.perf_counter()
    try:
        server.wait_up(120)
        session.get(url, params={"warmup": "1"}, timeout=120)
        for i in range(1, count + 1):
            upload = pool[int(rng.integers(len(pool)))]
            params = None
            if function == "gradcam":
                params = {"method": METHODS[i % 2]}
                if rng.random() < 0.7:
                    params["class"] = str(int(rng.integers(classes)))
            try:
                answer = session.post(
                    url,
                    data=upload.data,
                    params=params,
                    headers={"Content-Type": upload.content_type},
                    timeout=60,
                )
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code != 200:
                    errors += 1
                elif function == "gradcam":
                    cached += answer.json()["heatmap"]["cached"]
            except requests.RequestException:
                errors += 1
            if i % 100 == 0:
                time.sleep(SETTLE_S)
                usage = int((memory.path / "memory.usage_in_bytes").read_text()) / 2**20
                pids = memory.pids()
                points.append(
                    (
                        i,
                        memgroup.status_mb(pids, "VmRSS"),
                        usage,
                        memgroup.status_mb(pids, "RssAnon"),
                    )
                )
                if i % 1000 == 0:
                    print(
                        f"{function}: {i} requests, RSS {points[-1][1]:.1f} MiB, group "
                        f"{usage:.1f} MiB, errors {errors}",
                        flush=True,
                    )
    finally:
        cpu_s = server.cpu_s()
        oom = memory.oom_kills()
        peak = memory.peak_mb()
        server.stop()
    return {
        "function": function,
        "memory_mb": memory_mb,
        "cpu": cpu,
        "requests": count,
        "errors": errors,
        "statuses": statuses,
        "cache_hits": cached,
        "oom_kills": oom,
        "peak_mb": round(peak, 1),
        "seconds": round(time.perf_counter() - started),
        "cpu_ms_per_request": round(cpu_s / count * 1000, 1),
        "rss_first_mb": round(points[0][1], 1) if points else None,
        "rss_last_mb": round(points[-1][1], 1) if points else None,
        "rss_slope_mb_per_1000": slope_per_1000([(p[0], p[1]) for p in points]),
        # A leak keeps its slope; allocator high-water steps early in the run do not.
        "rss_second_half_slope_mb_per_1000": slope_per_1000(
            [(p[0], p[1]) for p in points], skip=0.5
        ),
        # Anonymous memory only: RSS also counts library pages mapped in as new code runs.
        "anon_first_mb": round(points[0][3], 1) if points else None,
        "anon_last_mb": round(points[-1][3], 1) if points else None,
        "anon_slope_mb_per_1000": slope_per_1000([(p[0], p[3]) for p in points]),
        "group_slope_mb_per_1000": slope_per_1000([(p[0], p[2]) for p in points]),
        "samples": points,  # (requests, RSS, group usage, anonymous), MiB
    }


def _config(text: str) -> tuple[int, float]:
    memory, _, cpu = text.partition(":")
    return int(memory), float(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--model-dir", default=str(ROOT / "model_store/models/demo/1"))
    parser.add_argument("--predict", type=_config, default=DEFAULTS["predict"])
    parser.add_argument("--gradcam", type=_config, default=DEFAULTS["gradcam"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "soak.json"))
    args = parser.parse_args(argv)
    if not (memgroup.available() and cpugroup.available()):
        print("needs the cgroup v1 memory and cpu controllers (root)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp, storage.storage_emulator(Path(tmp)) as url:
        for function in ("predict", "gradcam"):
            memory_mb, cpu = getattr(args, function)
            row = soak(function, Path(args.model_dir), memory_mb, cpu, args.requests, url)
            results.append(row)
            print(
                f"{function} at {memory_mb} MiB / {cpu:g} vCPU: {row['requests']} requests, "
                f"{row['errors']} errors, {row['oom_kills']} OOM kills, peak {row['peak_mb']} "
                f"MiB, RSS {row['rss_first_mb']} → {row['rss_last_mb']} MiB, slope "
                f"{row['rss_slope_mb_per_1000']} MiB / 1000 requests (second half "
                f"{row['rss_second_half_slope_mb_per_1000']}; anonymous memory "
                f"{row['anon_first_mb']} → {row['anon_last_mb']} MiB, slope "
                f"{row['anon_slope_mb_per_1000']}; group, page cache "
                f"included: {row['group_slope_mb_per_1000']}), {row['cache_hits']} cache hits, "
                f"{row['cpu_ms_per_request']} ms of CPU per request, {row['seconds']} s",
                flush=True,
            )
    Path(args.out).write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": results}, indent=2) + "\n"
    )
    return 0 if all(r["errors"] == 0 and r["oom_kills"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
