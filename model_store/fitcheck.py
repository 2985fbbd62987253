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
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from dermcam.manifest import read_manifest
from devstack import stack as devstack
from model_store import cpugroup, memgroup, tiers
from model_store.synthetic import dataset, lesion_image

TIERS_MB = (128, 256, 512)
# Tried only when none of TIERS_MB fits: where a model that needs more (TensorFlow) lands.
LARGER_TIERS_MB = (1024,)
BASELINE_MB = 2048
WHOLE_CORE = 1.0
SLOWDOWN_LIMIT = 1.25
# A run whose warm requests take longer than this is thrashing (page cache reclaimed and
# re-read on every request): stopped and reported as not fitting instead of waiting it out.
WARM_BUDGET_S = 120.0
MARGIN = 0.2
ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"


def server_python(engine: str) -> tuple[str, str]:
    """The interpreter a function runs under, and what it has installed.

    LiteRT runs are measured in `.venv-runtime` (make runtime: only the functions' own
    requirements, as deployed), so nothing the exporter or the tests need (TensorFlow,
    grpcio, ...) is imported by accident. The Keras engine needs TensorFlow: dev venv."""
    override = os.environ.get("DERMCAM_RUNTIME_PYTHON")
    if engine == "litert" and override:
        return override, "runtime"
    if engine == "litert" and RUNTIME_PYTHON.exists():
        return str(RUNTIME_PYTHON), "runtime"
    return sys.executable, "dev"


def server_env(
    model_dir: str | Path, engine: str, storage_url: str | None, bucket: str
) -> dict[str, str]:
    """A function server as deployed with concurrency 1: one request, one thread at a time."""
    return devstack.function_env(
        storage_url or "http://127.0.0.1:9",
        bucket,
        {
            "DERMCAM_MODEL_DIR": str(model_dir),
            "DERMCAM_ENGINE": engine,
            "DERMCAM_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1",
            "THREADS": "1",  # gunicorn threads
        },
    )


@dataclass(frozen=True)
class Upload:
    kind: str  # "small" (256 px PNG) or "large" (4000×3000 JPEG)
    data: bytes
    content_type: str


def request_plan(count: int, seed: int = 11) -> list[Upload]:
    """`count` distinct uploads, every third a 12-megapixel JPEG photo."""
    large_count = count // 3
    small, _, _ = dataset(seed, count - large_count, 256)
    plan = []
    base, _ = lesion_image(seed, 10_000, 256, 4)
    photo = np.asarray(Image.fromarray(base).resize((4000, 3000), Image.Resampling.BILINEAR))
    rng = np.random.default_rng(seed)
    jpegs = []
    for _ in range(large_count):
        variant = photo.copy()
        y, x = rng.integers(0, 2900), rng.integers(0, 3900)
        variant[y : y + 100, x : x + 100] = rng.integers(0, 255, 3, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(variant).save(buffer, "JPEG", quality=90)
        jpegs.append(Upload("large", buffer.getvalue(), "image/jpeg"))
    for i, pixels in enumerate(small):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        plan.append(Upload("small", buffer.getvalue(), "image/png"))
        if i % 2 == 1 and jpegs:
            plan.append(jpegs.pop())
    return plan  # plan[0] is the cold-start request


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1), "n": len(ordered)}


@dataclass
class Run:
    function: str
    engine: str
    limit_mb: int  # the memory group's limit (80 % of the tier when checking a tier)
    cgroup: bool
    venv: str = "dev"  # "runtime": the functions' requirements only, as deployed
    cpu: float | None = None  # vCPU share of the cpu group (None: not limited)
    tier_mb: int | None = None  # the configuration's memory, for its cost
    cold_start_s: float | None = None
    startup_cpu_s: float | None = None  # CPU time from spawn to the first answer
    cost_per_1000: float | None = None  # US dollars, billed as Cloud Run bills (tiers.py)
    peak_mb: float | None = None
    anon_mb: float | None = None
    page_cache_mb: float | None = None  # file pages charged to the group, at the end
    oom_kills: int = 0
    requests: int = 0
    errors: int = 0
    latency_ms: dict = field(default_factory=dict)  # client round trip, per kind
    compute_ms: dict = field(default_factory=dict)  # server timing without storage calls
    inference_ms: dict = field(default_factory=dict)  # the engine alone, per kind
    complete: bool = True  # False: stopped early (failures in a row, or over the budget)
    note: str = ""

    @property
    def answered(self) -> bool:
        return self.cold_start_s is not None

    def p50(self) -> float | None:
        return (self.latency_ms.get("all") or {}).get("p50")

    def option(self, baseline: Run | None) -> tiers.Option:
        return tiers.Option(
            self.tier_mb or self.limit_mb,
            self.cpu if self.cpu is not None else WHOLE_CORE,
            self.fits(baseline),
            self.cold_start_s,
            self.p50(),
            self.cost_per_1000,
        )

    def fits(self, baseline: Run | None) -> bool:
        if not self.answered or not self.complete or self.oom_kills or self.errors:
            return False
        if self.p50() is None:
            return False
        if baseline is None or baseline.p50() is None:
            return True
        return self.p50() <= SLOWDOWN_LIMIT * baseline.p50()

    def as_dict(self) -> dict:
        return asdict(self)


def run_function(
    function: str,
    model_dir: str | Path,
    limit_mb: int,
    plan: list[Upload],
    engine: str = "litert",
    storage_url: str | None = None,
    log_dir: Path | None = None,
    cold_timeout_s: float = 90.0,
    cpu: float | None = None,
    tier_mb: int | None = None,
    first_target: int | None = None,
) -> Run:
    """One server, one configuration: cold start, then every upload of `plan[1:]` in turn.
    `cpu` is the vCPU share (None: not limited); `tier_mb` the memory billed for its cost."""
    use_cgroup = memgroup.available()
    run = Run(function, engine, limit_mb, use_cgroup, cpu=cpu, tier_mb=tier_mb)
    group = memgroup.MemoryGroup(limit_mb) if use_cgroup else None
    cpus = cpugroup.CpuGroup(cpu) if cpugroup.available() else None
    if cpu is not None and cpus is None:
        run.note = "no cpu cgroup here: the vCPU share is not applied"
    bucket = f"bench-{uuid.uuid4().hex[:10]}"  # a fresh bucket: nothing is cached
    if storage_url:
        devstack.create_bucket(storage_url, bucket)
    env = server_env(model_dir, engine, storage_url, bucket)
    python, run.venv = server_python(engine)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="fitcheck-"))
    log = open(log_dir / f"{function}-{engine}-{limit_mb}-{cpu}.log", "ab")  # noqa: SIM115
    memgroup.drop_page_cache()
    started = time.perf_counter()
    procs_files = [
        *([group.procs_file] if group else []),
        *(cpus.procs_files if cpus else []),
    ]
    proc, url = spawn(function, env, procs_files, log, python)
    session = requests.Session()
    try:

        def hopeless() -> bool:  # a worker OOM-killed again and again while loading
            return group is not None and group.oom_kills() >= 3

        run.cold_start_s = _first_answer(
            session, url, plan[0], function, started, cold_timeout_s, proc, hopeless, first_target
        )
        if cpus is not None and run.cold_start_s is not None:
            run.startup_cpu_s = round(cpus.usage_s(), 3)
        if run.cold_start_s is None:
            run.note = "never answered"
        else:
            _warm(run, session, url, plan[1:], function, class_count(model_dir))
    finally:
        peak_fallback = None if group else memgroup.tree_peak_rss_mb(proc.pid)
        if group is not None:
            run.peak_mb = round(group.peak_mb(), 1)
            run.anon_mb = round(group.anon_mb(), 1)
            run.page_cache_mb = round(group.stat().get("total_cache", 0) / memgroup.MIB, 1)
            run.oom_kills = group.oom_kills()
        else:
            run.peak_mb = round(peak_fallback, 1)
            run.note = (run.note + "; " if run.note else "") + "no cgroup: peak is process RSS"
        devstack.kill_group(proc)
        log.close()
        for each in (group, cpus):
            if each is not None:
                wait_empty(each)
                each.remove()
    return run


def spawn(
    function: str,
    env: dict[str, str],
    procs_files: list[Path],
    log: object,
    python: str = sys.executable,
) -> tuple[subprocess.Popen, str]:
    """Start a function's functions-framework server on a free port, inside the cgroups whose
    `cgroup.procs` files are given."""
    port = devstack.free_port()
    command = [
        python,
        "-m",
        "functions_framework",
        "--target",
        function,
        "--source",
        str(ROOT / "functions" / function / "main.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if procs_files:  # join the groups before Python starts, so imports count too
        join = " && ".join(f"echo $$ > {path}" for path in procs_files)
        command = ["/bin/sh", "-c", f'{join} && exec "$@"', "sh", *command]
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, f"http://127.0.0.1:{port}"


def class_count(model_dir: str | Path) -> int:
    """How many classes the exported model answers: gradcam is asked for each in turn, and a
    class the model does not have is a 422, not a measurement."""
    return len(read_manifest(model_dir).labels)


def post_upload(
    session: requests.Session,
    url: str,
    upload: Upload,
    function: str,
    target: int | None,
    timeout: float = 60.0,
) -> requests.Response:
    """One upload; gradcam is asked for class `target`, or (None) for the top class, as the
    page's first call for a photo asks."""
    params = {"class": str(target)} if function == "gradcam" and target is not None else None
    return session.post(
        url,
        data=upload.data,
        params=params,
        timeout=timeout,
        headers={"Content-Type": upload.content_type},
    )


def _first_answer(
    session: requests.Session,
    url: str,
    upload: Upload,
    function: str,
    started: float,
    timeout_s: float,
    proc: subprocess.Popen,
    hopeless: Callable[[], bool],
    first_target: int | None = None,
) -> float | None:
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None or hopeless():
            return None
        try:
            response = post_upload(session, url, upload, function, first_target, timeout=timeout_s)
        except requests.ConnectionError:
            time.sleep(0.01)
            continue
        except requests.Timeout:
            return None
        if response.status_code == 200:
            return round(time.perf_counter() - started, 3)
        if response.status_code in (500, 502, 503):
            time.sleep(0.05)  # a worker killed while loading: gunicorn restarts it
            continue
        return None
    return None


def _warm(
    run: Run,
    session: requests.Session,
    url: str,
    plan: list[Upload],
    function: str,
    classes: int,
    budget_s: float | None = None,
) -> None:
    budget_s = WARM_BUDGET_S if budget_s is None else budget_s
    client: dict[str, list[float]] = {"small": [], "large": []}
    server: dict[str, list[float]] = {"small": [], "large": []}
    engine: dict[str, list[float]] = {"small": [], "large": []}
    failures_in_a_row = 0
    started = time.perf_counter()
    for i, upload in enumerate(plan, start=1):
        if time.perf_counter() - started > budget_s:
            run.complete = False
            run.note = f"stopped: {run.requests} requests took over {budget_s:.0f} s (thrashing)"
            break
        begun = time.perf_counter()
        try:
            response = post_upload(session, url, upload, function, i % classes)
            ok = response.status_code == 200
            failure = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            ok, failure = False, type(exc).__name__
        run.requests += 1
        if not ok:
            run.errors += 1
            failures_in_a_row += 1
            if failures_in_a_row >= 3:
                run.complete = False
                run.note = f"stopped after 3 failures in a row (last: {failure}, {upload.kind})"
                break
            continue
        failures_in_a_row = 0
        client[upload.kind].append((time.perf_counter() - begun) * 1000)
        timing = response.json()["timing_ms"]
        storage = timing.get("lookup_ms", 0) + timing.get("store_ms", 0)
        server[upload.kind].append(timing["total_ms"] - storage)
        engine[upload.kind].append(timing["inference_ms"])
    run.latency_ms = {k: _percentiles(v) for k, v in client.items()}
    if run.tier_mb:
        share = run.cpu if run.cpu is not None else WHOLE_CORE
        run.cost_per_1000 = tiers.cost_per_1000(
            client["small"] + client["large"], run.tier_mb, share
        )
    run.latency_ms["all"] = _percentiles(client["small"] + client["large"])
    run.compute_ms = {k: _percentiles(v) for k, v in server.items()}
    run.inference_ms = {k: _percentiles(v) for k, v in engine.items()}


def wait_empty(group: memgroup.MemoryGroup | cpugroup.CpuGroup, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while group.pids() and time.monotonic() < deadline:
        for pid in group.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def explore(
    function: str,
    model_dir: str | Path,
    plan: list[Upload],
    engine: str = "litert",
    storage_url: str | None = None,
    log_dir: Path | None = None,
    memory_tiers: tuple[int, ...] = (*TIERS_MB, *LARGER_TIERS_MB),
    on_run: Callable[[Run], None] = lambda run: None,
    cpus: tuple[float, ...] | None = None,
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> tuple[list[Run], dict[float, Run]]:
    """The whole-core run, then memory tiers from the smallest up, each at its default vCPU
    share and the `--cpu` overrides above it, until a tier has a configuration that fits and
    meets the latency targets (a larger tier costs more for the same speed). Each share's
    2 GiB baseline is measured once and judges every configuration with that share.
    (runs, baselines)"""

    def measure(limit_mb: int, cpu: float, tier_mb: int | None = None) -> Run:
        run = run_function(
            function,
            model_dir,
            limit_mb,
            plan,
            engine,
            storage_url,
            log_dir,
            cpu=cpu,
            tier_mb=tier_mb,
        )
        on_run(run)
        return run

    baselines: dict[float, Run] = {WHOLE_CORE: measure(BASELINE_MB, WHOLE_CORE, BASELINE_MB)}
    runs: list[Run] = []
    for memory in memory_tiers:
        for tier_mb, cpu in tiers.configurations([memory]):
            if cpus is not None and cpu not in cpus:
                continue
            runs.append(measure(int(tier_mb * (1 - MARGIN)), cpu, tier_mb))
            if not runs[-1].answered or runs[-1].oom_kills:
                break  # the memory does not hold; more CPU will not change that
            if cpu not in baselines:  # measured only where a configuration held
                baselines[cpu] = measure(BASELINE_MB, cpu)
        held = [r.option(baselines.get(r.cpu)) for r in runs if r.tier_mb == memory]
        if any(o.meets(max_p50_ms, max_cold_s) for o in held):
            break
    return runs, baselines


def check(
    model_dir: str | Path,
    functions: tuple[str, ...] = ("predict", "gradcam"),
    warm: int = 30,
    storage_url: str | None = None,
    memory_tiers: tuple[int, ...] = (*TIERS_MB, *LARGER_TIERS_MB),
    cpus: tuple[float, ...] | None = None,
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> dict[str, dict]:
    """`explore` each function; the report `describe` and `recommendation` read."""
    plan = request_plan(warm + 1)
    report = {}
    for function in functions:
        runs, baselines = explore(
            function,
            model_dir,
            plan,
            storage_url=storage_url,
            memory_tiers=memory_tiers,
            cpus=cpus,
            max_p50_ms=max_p50_ms,
            max_cold_s=max_cold_s,
        )
        report[function] = _summary(runs, baselines)
    return report


def _summary(runs: list[Run], baselines: dict[float, Run]) -> dict:
    options = [r.option(baselines.get(r.cpu)) for r in runs]
    fitting = [r for r in runs if r.fits(baselines.get(r.cpu))]
    return {
        "tier_mb": min((r.tier_mb for r in fitting), default=None),
        "whole_core": baselines[WHOLE_CORE].as_dict(),
        "baselines": {str(cpu): run.as_dict() for cpu, run in baselines.items()},
        "runs": [r.as_dict() for r in runs],
        "options": [asdict(o) for o in options],
        "cgroup": baselines[WHOLE_CORE].cgroup,
    }


def recommendation(
    result: dict,
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> tuple[tiers.Option | None, list[tiers.Option]]:
    return tiers.recommend([tiers.Option(**o) for o in result["options"]], max_p50_ms, max_cold_s)


def describe(
    report: dict[str, dict],
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> str:
    """The fit of each function, its recommended configuration and the trade-offs."""
    lines = []
    for function, result in report.items():
        tier = f"{result['tier_mb']} MiB" if result["tier_mb"] else "none up to 1024 MiB"
        how = "" if result["cgroup"] else " (no cgroup here: estimated from process RSS)"
        whole = result["whole_core"]
        lines.append(
            f"{function}: fits {tier} with a {MARGIN:.0%} margin{how}; on a whole core: cold "
            f"start {_fmt(whole['cold_start_s'], 's')}, startup CPU "
            f"{_fmt(whole['startup_cpu_s'], 's')}, p50 {_fmt(_p50_of(whole), 'ms')}"
        )
        if whole.get("errors") or not whole.get("complete", True):
            lines.append(
                f"  it failed at 2 GiB on a whole core too ({whole.get('note') or 'errors'}): "
                "not a matter of memory; the server's log says why"
            )
        best, others = recommendation(result, max_p50_ms, max_cold_s)
        if best is None:
            lines.append(
                f"  no configuration meets warm p50 <= {max_p50_ms:g} ms and cold start <= "
                f"{max_cold_s:g} s; the measured ones:"
            )
        else:
            lines.append(f"  recommended: {best.flags} (${best.cost_per_1000:.4f} / 1000 requests)")
        lines.append("  memory  vCPU   fits  cold start  p50 (mix)  $ / 1000 requests")
        for option in ([best] if best else []) + others[:5]:
            lines.append(
                f"  {option.memory_mb:>4}Mi  {option.cpu:<5g}  {'yes' if option.fits else 'no':<4}"
                f"  {_fmt(option.cold_start_s, 's'):>10}  {_fmt(option.p50_ms, 'ms'):>9}"
                f"  {'–' if option.cost_per_1000 is None else f'{option.cost_per_1000:.4f}':>8}"
            )
    return "\n".join(lines)


def _p50_of(run: dict) -> float | None:
    return (run.get("latency_ms", {}).get("all") or {}).get("p50")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f} s" if unit == "s" else f"{value:.0f} ms"


def check_with_storage(
    model_dir: str | Path,
    functions: tuple[str, ...] = ("predict", "gradcam"),
    warm: int = 30,
    **options: Any,
) -> dict[str, dict]:
    """`check` with a storage emulator of its own, for gradcam's uploads."""
    with tempfile.TemporaryDirectory() as tmp, devstack.storage_emulator(Path(tmp)) as url:
        return check(model_dir, functions, warm, url, **options)


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
