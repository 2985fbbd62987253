"""Memory figures and one structured log line per request (Cloud Logging's JSON format).

Cloud Run / Cloud Functions gen2 parse a JSON line on stdout: `severity` and `message` are
special fields, the rest lands in jsonPayload. Callers must never pass image bytes."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60  # v1 reports "unlimited" as a huge number
_write_lock = threading.Lock()


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_groups(proc_cgroup: str) -> dict[str, str]:
    """controller → this process's cgroup path ("" → the v2 unified hierarchy)."""
    groups = {}
    for line in proc_cgroup.splitlines():
        try:
            _, controllers, path = line.split(":", 2)
        except ValueError:
            continue
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path.lstrip("/")
    return groups


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _bytes(path: Path) -> int | None:
    raw = _read(path)
    if raw is None or raw == "max":
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return None if value >= _NO_LIMIT else value


def container(root: Path = _CGROUP_ROOT, proc_cgroup: str | None = None) -> dict[str, Any]:
    """The instance's memory and CPU as its cgroup counts them (v2, else v1): usage and peak
    include every process (the gunicorn master too) and the page cache, which a process's
    own RSS leaves out. Fields are None where this system does not say."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    groups = _own_groups(proc_cgroup)
    usage = peak = limit = cpu = None
    if "" in groups and (root / groups[""] / "memory.current").exists():  # cgroup v2
        folder = root / groups[""]
        usage, peak = _bytes(folder / "memory.current"), _bytes(folder / "memory.peak")
        limit = _bytes(folder / "memory.max")
        quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
        if quota != "max" and period:
            cpu = int(quota) / int(period)
    else:  # cgroup v1
        if "memory" in groups:
            folder = root / "memory" / groups["memory"]
            usage = _bytes(folder / "memory.usage_in_bytes")
            peak = _bytes(folder / "memory.max_usage_in_bytes")
            limit = _bytes(folder / "memory.limit_in_bytes")
        if "cpu" in groups:
            mount = next((m for m in ("cpu", "cpu,cpuacct") if (root / m).is_dir()), "cpu")
            folder = root / mount / groups["cpu"]
            quota = _bytes(folder / "cpu.cfs_quota_us")
            period = _bytes(folder / "cpu.cfs_period_us")
            if quota and quota > 0 and period:
                cpu = quota / period
    if limit is None:  # what a container sees at its mount's root
        limit = _bytes(root / "memory.max") or _bytes(root / "memory" / "memory.limit_in_bytes")
    return {
        "usage_mb": _mb(usage),
        "peak_mb": _mb(peak),
        "limit_mb": _mb(limit),
        "headroom_mb": _mb(limit - max(usage or 0, peak or 0)) if limit else None,
        "cpu_limit": round(cpu, 3) if cpu else None,
    }


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 1024 / 1024, 1)


def process_tree_mb() -> float | None:
    """RSS of the server's processes: the gunicorn master (this worker's parent, when it is
    a Python process of the same group) and every process under it."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        me = psutil.Process()
        parent = me.parent()
        top = parent if parent and "python" in parent.name().lower() else me
        tree = [top, *top.children(recursive=True)]
        return round(sum(p.memory_info().rss for p in tree) / 1024 / 1024, 1)
    except psutil.Error:
        return None


def memory() -> dict[str, float | None]:
    """RSS and peak RSS of this process, and the container's limit where it can be read
    (cheap enough for every request's log line)."""
    rss, peak = _status_kb("VmRSS"), _status_kb("VmHWM")
    return {
        "rss_mb": round(rss / 1024, 1) if rss is not None else None,
        "peak_mb": round(peak / 1024, 1) if peak is not None else None,
        "limit_mb": container()["limit_mb"],
    }


def headroom() -> dict[str, Any]:
    """The warmup's memory report: this process, the server's process tree, and the
    container as its cgroup counts it (usage, peak, limit, headroom, CPU limit)."""
    return {**memory(), "process_tree_mb": process_tree_mb(), "container": container()}


def log(severity: str, message: str, **fields: Any) -> None:
    """Write one JSON log line to stdout. Fields must be small scalars, never payloads."""
    record = {"severity": severity, "message": message, **fields}
    line = json.dumps(record, default=str, separators=(",", ":"))
    with _write_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
