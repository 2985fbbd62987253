"""One function measured once, on a whole core: what the predicted fit check rests on.

One real server in a memory group and a cpu group of one vCPU (page cache dropped first):
its cold start and the CPU it took (cpuacct), then warm requests as the fit check sends them,
each with the CPU it cost and its round trip, and the group's memory by stage. Then, in the
same process, the memory tiers from the largest down: the group's limit is lowered to 80 % of
the tier (the kernel must reclaim page cache to get under it; it refuses when what is left is
more than the limit), a small PNG and a 12-megapixel JPEG settle it (they read back what the
reclaim dropped), then two of each are timed. A tier whose limit is above the peak the group
reached unconstrained fits without a squeeze: nothing would have changed there. A squeezed tier
fits when the limit was accepted, nothing was OOM-killed, all answered and the median of
neither kind took more than
SLOWDOWN_LIMIT × its unconstrained time + SLOWDOWN_SLACK_MS, the bound a real run is held to
(a page cache too small to hold what every request
reads makes every request slow: thrashing). Memory does not depend on the CPU share, so this
holds at every share of the tier. A squeezed tier that held is then started once more, a
fresh server under its limit on a whole core: its cold start and startup CPU (loading the
model while the kernel reclaims page cache) are what that tier's cold start is predicted from.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from harness import memgroup, servers
from model_store.fitting.load import (
    REQUEST_GAP_S,
    Upload,
    class_count,
    post_upload,
    request_plan,
    start_server,
)
from model_store.fitting.runs import (
    BASELINE_MB,
    MARGIN,
    SLOWDOWN_LIMIT,
    SLOWDOWN_SLACK_MS,
    WHOLE_CORE,
)

# At each tier: a small and a large request to settle (the first after the squeeze read back
# what reclaim dropped), then these, timed.
SETTLE_REQUESTS = ("small", "large")
SQUEEZE_REQUESTS = ("small", "large", "small", "large")


@dataclass
class Request:
    kind: str  # small | large
    cpu_s: float  # the server's CPU for it (every process of the group)
    wall_s: float  # the client's round trip


@dataclass
class TierFit:
    tier_mb: int
    limit_mb: int
    fits: bool
    reason: str = ""
    slowdown: float | None = None  # squeezed round trip ÷ unconstrained, worst of the requests
    major_faults: int = 0  # file pages read back from disk while squeezed
    # A fresh server started under the squeezed limit (whole core): loading the model there
    # reclaims page cache as it reads, which a warm server squeezed afterwards never shows.
    cold_start_s: float | None = None
    startup_cpu_s: float | None = None


@dataclass
class Profile:
    function: str
    cold_start_s: float | None = None
    startup_cpu_s: float | None = None
    requests: list[Request] = field(default_factory=list)
    stages: dict[str, dict] = field(default_factory=dict)  # memory by stage, MiB
    peak_mb: float | None = None  # the group's peak (page cache included) at 2 GiB
    tiers: list[TierFit] = field(default_factory=list)
    errors: int = 0
    note: str = ""

    def fit(self, tier_mb: int) -> TierFit | None:
        return next((t for t in self.tiers if t.tier_mb == tier_mb), None)

    def as_dict(self) -> dict:
        return asdict(self)


def _stage(group: memgroup.MemoryGroup) -> dict:
    stat = group.stat()
    return {
        "peak_mb": round(group.peak_mb(), 1),
        "anon_mb": round(stat.get("total_rss", 0) / memgroup.MIB, 1),
        "page_cache_mb": round(stat.get("total_cache", 0) / memgroup.MIB, 1),
        "mapped_mb": round(stat.get("total_mapped_file", 0) / memgroup.MIB, 1),
    }


def measure(
    function: str,
    model_dir: str | Path,
    plan: list[Upload],
    memory_tiers: tuple[int, ...],
    storage_url: str | None = None,
    log_dir: Path | None = None,
    cold_timeout_s: float = 90.0,
) -> Profile:
    """The profile of one function (`plan[0]` is the cold request, the rest warm)."""
    profile = Profile(function)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="profile-"))
    server = start_server(
        function,
        model_dir,
        log_dir / f"{function}-profile.log",
        storage_url=storage_url,
        memory_mb=BASELINE_MB,
        cpu_share=WHOLE_CORE,
    )
    if server.memory is None or server.cpu is None:
        server.stop()
        raise RuntimeError("the predicted fit check needs the cgroup v1 memory and cpu controllers")
    session = requests.Session()
    classes = class_count(model_dir)
    try:
        profile.cold_start_s = _cold_start(session, server, plan[0], function, cold_timeout_s)
        if profile.cold_start_s is None:
            profile.note = "never answered on a whole core at 2 GiB"
            return profile
        profile.startup_cpu_s = round(server.cpu_s(), 3)
        profile.stages["first answer"] = _stage(server.memory)
        for i, upload in enumerate(plan[1:], start=1):
            request = _timed(session, server, upload, function, i % classes)
            if request is None:
                profile.errors += 1
                continue
            profile.requests.append(request)
            label = f"after the first {upload.kind} request"
            if label not in profile.stages:
                profile.stages[label] = _stage(server.memory)
        profile.stages[f"after {len(plan) - 1} requests"] = _stage(server.memory)
        profile.peak_mb = round(server.memory.peak_mb(), 1)
        if not profile.errors:
            _squeeze(profile, session, server, plan, function, classes, memory_tiers)
    finally:
        server.stop()
    for fit in profile.tiers:
        if fit.fits and fit.slowdown is not None:  # squeezed, and it held
            _cold_start_under(
                fit, function, model_dir, plan[0], storage_url, log_dir, cold_timeout_s
            )
    return profile


def _cold_start_under(
    fit: TierFit,
    function: str,
    model_dir: str | Path,
    upload: Upload,
    storage_url: str | None,
    log_dir: Path,
    timeout_s: float,
) -> None:
    server = start_server(
        function,
        model_dir,
        log_dir / f"{function}-profile-{fit.limit_mb}.log",
        storage_url=storage_url,
        memory_mb=fit.limit_mb,
        cpu_share=WHOLE_CORE,
    )
    try:
        fit.cold_start_s = _cold_start(requests.Session(), server, upload, function, timeout_s)
        if fit.cold_start_s is None:
            fit.fits = False
            fit.reason = f"a fresh server under {fit.limit_mb} MiB never answered"
        else:
            fit.startup_cpu_s = round(server.cpu_s(), 3)
    finally:
        server.stop()


def _cold_start(
    session: requests.Session,
    server: servers.Server,
    upload: Upload,
    function: str,
    timeout_s: float,
) -> float | None:
    while time.perf_counter() - server.started < timeout_s:
        if not server.alive():
            return None
        try:
            answer = post_upload(session, server.url, upload, function, None, timeout=timeout_s)
        except requests.ConnectionError:
            time.sleep(0.01)
            continue
        if answer.status_code == 200:
            return round(time.perf_counter() - server.started, 3)
        if answer.status_code in (500, 502, 503):
            time.sleep(0.05)
            continue
        return None
    return None


def _timed(
    session: requests.Session,
    server: servers.Server,
    upload: Upload,
    function: str,
    target: int | None,
) -> Request | None:
    time.sleep(REQUEST_GAP_S)
    cpu = server.cpu_s()
    begun = time.perf_counter()
    try:
        answer = post_upload(session, server.url, upload, function, target)
    except requests.RequestException:
        return None
    wall = time.perf_counter() - begun
    if answer.status_code != 200:
        return None
    return Request(upload.kind, round(server.cpu_s() - cpu, 5), round(wall, 5))


def _squeeze(
    profile: Profile,
    session: requests.Session,
    server: servers.Server,
    plan: list[Upload],
    function: str,
    classes: int,
    memory_tiers: tuple[int, ...],
) -> None:
    """Each tier from the largest down, in the same server, until one does not hold."""
    typical = {
        kind: statistics.median(r.wall_s for r in profile.requests if r.kind == kind)
        for kind in ("small", "large")
    }
    # Images not sent before: gradcam must compute, not answer from its stored heatmaps.
    squeezed = [t for t in memory_tiers if int(t * (1 - MARGIN)) < (profile.peak_mb or 0)]
    per_tier = len(SETTLE_REQUESTS) + len(SQUEEZE_REQUESTS)
    fresh = request_plan(max(3, len(squeezed) * per_tier * 3 // 2), seed=29)
    uploads = {kind: [u for u in fresh if u.kind == kind] for kind in typical}
    group = server.memory
    for tier in sorted(memory_tiers, reverse=True):
        limit = int(tier * (1 - MARGIN))
        fit = TierFit(tier, limit, False)
        profile.tiers.append(fit)
        if tier not in squeezed:  # the whole run stayed below it: nothing would change there
            fit.fits, fit.reason = True, f"the peak, {profile.peak_mb} MiB, is below the limit"
            continue
        if not group.set_limit(limit):
            fit.reason = f"the kernel could not reclaim down to {limit} MiB"
            break
        kills = group.oom_kills()
        for kind in SETTLE_REQUESTS:
            _timed(session, server, uploads[kind].pop(), function, None)
        faults = group.stat().get("total_pgmajfault", 0)
        ratios: dict[str, list[float]] = {"small": [], "large": []}
        for i, kind in enumerate(SQUEEZE_REQUESTS):
            request = _timed(session, server, uploads[kind].pop(), function, i % classes)
            if request is None:
                fit.reason = f"a {kind} request failed at {limit} MiB"
                break
            ratios[kind].append(request.wall_s / typical[kind])
        slowdowns = [statistics.median(v) for v in ratios.values() if v]
        # the Run.fits bound, per kind: 1.25x the unconstrained round trip plus 10 ms
        slow = [
            statistics.median(v) * typical[kind] * 1000
            > SLOWDOWN_LIMIT * typical[kind] * 1000 + SLOWDOWN_SLACK_MS
            for kind, v in ratios.items()
            if v
        ]
        fit.major_faults = group.stat().get("total_pgmajfault", 0) - faults
        if group.oom_kills() > kills:
            fit.reason = f"OOM-killed at {limit} MiB"
        elif slowdowns and not fit.reason:
            fit.slowdown = round(max(slowdowns), 2)
            if any(slow):
                fit.reason = f"{fit.slowdown}× slower at {limit} MiB (page cache thrashing)"
            else:
                fit.fits = True
        if not fit.fits:
            break  # a smaller tier will not hold either
