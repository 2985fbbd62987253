"""A memory tier simulated honestly: a cgroup v1 memory group with a hard limit.

RSS alone is not the figure: a function's memory includes the page cache of the model it
maps and every process of its server. The group's `memory.max_usage_in_bytes` counts all of
it, `memory.oom_control` counts OOM kills, and the page cache is dropped before each cold
start so mapped files have to be read again. Where the v1 controller is not writable (another
OS, no root) `available()` is False and callers fall back to the RSS of the process tree.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/memory")
MIB = 1024 * 1024


def available() -> bool:
    return (ROOT / "memory.limit_in_bytes").exists() and os.access(ROOT, os.W_OK)


def drop_page_cache() -> bool:
    """Write back and drop clean pages, so a cold start reads the model from disk."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


class MemoryGroup:
    """A child memory cgroup with `limit_mb` (memory and memory+swap)."""

    def __init__(self, limit_mb: int, name: str | None = None) -> None:
        self.path = ROOT / (name or f"dermcam-{uuid.uuid4().hex[:8]}")
        self.path.mkdir()
        limit = str(limit_mb * MIB)
        (self.path / "memory.limit_in_bytes").write_text(limit)
        try:  # the memsw file only exists with swap accounting on
            (self.path / "memory.memsw.limit_in_bytes").write_text(limit)
        except OSError:
            pass
        self.limit_mb = limit_mb

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def set_limit(self, limit_mb: int) -> bool:
        """Lower (or raise) the hard limit of a live group. False when the kernel cannot
        reclaim enough to get under it (EBUSY): what is left is anonymous memory."""
        limit = str(limit_mb * MIB)
        files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        if limit_mb > self.limit_mb:
            files.reverse()  # memory+swap may never be below memory
        try:
            for name in files:
                if (self.path / name).exists():
                    (self.path / name).write_text(limit)
        except OSError:
            return False
        self.limit_mb = limit_mb
        return True

    def usage_mb(self) -> float:
        return int((self.path / "memory.usage_in_bytes").read_text()) / MIB

    def peak_mb(self) -> float:
        return int((self.path / "memory.max_usage_in_bytes").read_text()) / MIB

    def stat(self) -> dict[str, int]:
        rows = (self.path / "memory.stat").read_text().split("\n")
        return {k: int(v) for k, v in (r.split() for r in rows if r.strip())}

    def anon_mb(self) -> float:
        """Anonymous memory now (v1 keeps no peak of it): heap, arrays, packed weights."""
        return self.stat().get("total_rss", 0) / MIB

    def oom_kills(self) -> int:
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def pids(self) -> list[int]:
        return [int(p) for p in self.procs_file.read_text().split()]

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def status_mb(pids: list[int], field: str) -> float:
    """The sum of one /proc/PID/status field (VmRSS, VmHWM) over processes, MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def tree_peak_rss_mb(pid: int) -> float:
    """Fallback without cgroups: the sum of VmHWM over a process and its descendants."""
    return status_mb([pid, *_descendants(pid)], "VmHWM")


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = task.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(task.parent.name)
            found.extend([child, *_descendants(child)])
    return found
