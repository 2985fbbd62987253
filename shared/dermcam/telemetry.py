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


def _limit_files() -> list[Path]:
    """This process's own cgroup limit files first (v2, then v1), then the mount's root (what
    a container sees)."""
    own = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                own.append(_CGROUP_ROOT / path.lstrip("/") / "memory.max")
            elif "memory" in controllers.split(","):
                own.append(_CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    return [*own, _CGROUP_ROOT / "memory.max", _CGROUP_ROOT / "memory" / "memory.limit_in_bytes"]


def _limit_bytes() -> int | None:
    for path in _limit_files():
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        return None if value >= _NO_LIMIT else value
    return None


def memory() -> dict[str, float | None]:
    """RSS and peak RSS of this process, and the container's limit where it can be read."""
    rss, peak, limit = _status_kb("VmRSS"), _status_kb("VmHWM"), _limit_bytes()
    return {
        "rss_mb": round(rss / 1024, 1) if rss is not None else None,
        "peak_mb": round(peak / 1024, 1) if peak is not None else None,
        "limit_mb": round(limit / 1024 / 1024, 1) if limit is not None else None,
    }


def log(severity: str, message: str, **fields: Any) -> None:
    """Write one JSON log line to stdout. Fields must be small scalars, never payloads."""
    record = {"severity": severity, "message": message, **fields}
    line = json.dumps(record, default=str, separators=(",", ":"))
    with _write_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
