"""A tier's CPU share simulated honestly: a cgroup v1 cpu group with a CFS quota, and a
cpuacct group counting the CPU time a function's processes use.

Cloud Functions gen2 (Cloud Run functions) gives a function CPU with its memory (0.083 vCPU
at 128 MiB ... 1 vCPU at 2 GiB) unless `--cpu` sets it. A quota of share × period per period
is what a fractional vCPU is. `cpuacct.usage` is what startup costs in CPU, whatever the
share: the figure that does not drift with the share or the machine's load.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
ACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
PERIOD_US = 100_000


def available() -> bool:
    return (CPU_ROOT / "cpu.cfs_quota_us").exists() and os.access(CPU_ROOT, os.W_OK)


class CpuGroup:
    """A child cpu group limited to `share` vCPU (None: no limit) and a cpuacct group."""

    def __init__(self, share: float | None, name: str | None = None) -> None:
        name = name or f"dermcam-{uuid.uuid4().hex[:8]}"
        self.share = share
        self.cpu = CPU_ROOT / name
        self.cpu.mkdir()
        (self.cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        quota = -1 if share is None else max(1000, round(share * PERIOD_US))
        (self.cpu / "cpu.cfs_quota_us").write_text(str(quota))
        # cpu and cpuacct may be mounted together (one folder) or apart (two).
        self.acct = self.cpu if (self.cpu / "cpuacct.usage").exists() else ACCT_ROOT / name
        if self.acct != self.cpu:
            self.acct.mkdir()

    @property
    def procs_files(self) -> list[Path]:
        files = [self.cpu / "cgroup.procs"]
        return files if self.acct == self.cpu else [*files, self.acct / "cgroup.procs"]

    def usage_s(self) -> float:
        """CPU time used by every process that has been in the group, in seconds."""
        return int((self.acct / "cpuacct.usage").read_text()) / 1e9

    def throttled_s(self) -> float:
        """Time the group spent throttled by its quota."""
        for line in (self.cpu / "cpu.stat").read_text().splitlines():
            if line.startswith("throttled_time "):
                return int(line.split()[1]) / 1e9
        return 0.0

    def pids(self) -> list[int]:
        return [int(p) for p in (self.cpu / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        for folder in {self.cpu, self.acct}:
            try:
                folder.rmdir()
            except OSError:
                pass
