"""The warmup's memory report: the container as its cgroup counts it (both cgroup versions),
the server's process tree, the CPU limit."""

from __future__ import annotations

import pytest
import requests

from dermcam import telemetry
from harness import cpugroup, memgroup, servers

MIB = 1024 * 1024


def test_cgroup_v2_files(tmp_path):
    group = tmp_path / "system.slice" / "fn"
    group.mkdir(parents=True)
    (group / "memory.current").write_text(f"{100 * MIB}\n")
    (group / "memory.peak").write_text(f"{150 * MIB}\n")
    (group / "memory.max").write_text(f"{256 * MIB}\n")
    (group / "cpu.max").write_text("16700 100000\n")
    got = telemetry.container(tmp_path, "0::/system.slice/fn\n")
    assert got == {
        "usage_mb": 100.0,
        "peak_mb": 150.0,
        "limit_mb": 256.0,
        "headroom_mb": 106.0,
        "cpu_limit": 0.167,
    }
    (group / "memory.max").write_text("max\n")
    (group / "cpu.max").write_text("max 100000\n")
    unlimited = telemetry.container(tmp_path, "0::/system.slice/fn\n")
    assert unlimited["limit_mb"] is None and unlimited["cpu_limit"] is None


def test_cgroup_v1_files(tmp_path):
    memory = tmp_path / "memory" / "fn"
    cpu = tmp_path / "cpu,cpuacct" / "fn"
    memory.mkdir(parents=True)
    cpu.mkdir(parents=True)
    (memory / "memory.usage_in_bytes").write_text(str(90 * MIB))
    (memory / "memory.max_usage_in_bytes").write_text(str(120 * MIB))
    (memory / "memory.limit_in_bytes").write_text(str(128 * MIB))
    (cpu / "cpu.cfs_quota_us").write_text("8300")
    (cpu / "cpu.cfs_period_us").write_text("100000")
    got = telemetry.container(tmp_path, "4:memory:/fn\n3:cpu,cpuacct:/fn\n")
    assert got["limit_mb"] == 128.0 and got["peak_mb"] == 120.0 and got["headroom_mb"] == 8.0
    assert got["cpu_limit"] == 0.083


def test_warmup_reports_the_real_cgroup_of_its_server(stack, tmp_path):
    """gradcam in a real 256 MiB memory group and a 0.5 vCPU cpu group on this machine."""
    if not (memgroup.available() and cpugroup.available()):
        pytest.skip("needs cgroup v1 controllers")
    env = servers.function_env(stack.storage_url, stack.bucket)
    with open(tmp_path / "gradcam.log", "ab") as log:
        server = servers.start_function("gradcam", env=env, log=log, memory_mb=256, cpu_share=0.5)
    try:
        server.wait_up(60)
        report = requests.get(server.url, params={"warmup": "1"}, timeout=60).json()["memory"]
        usage = server.memory.path / "memory.usage_in_bytes"
        group_usage = int(usage.read_text()) / MIB
    finally:
        server.stop()
    box = report["container"]
    assert box["limit_mb"] == 256.0 and box["cpu_limit"] == 0.5
    assert abs(box["usage_mb"] - group_usage) < 20  # read moments apart
    assert box["peak_mb"] >= box["usage_mb"]
    assert box["headroom_mb"] == pytest.approx(256.0 - box["peak_mb"], abs=0.05)  # both rounded
    # the master and the worker: more than the worker alone, and the page cache beyond both
    assert report["process_tree_mb"] > report["rss_mb"]
