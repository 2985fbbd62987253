"""A server as a real process: started in a session of its own (so it and every worker it forks
are signalled together), inside a memory group and a cpu group when asked (joined before
`exec`, so its imports count too), waited for, and torn down with its groups emptied.

    server = start_function("predict", env=env, log=log, memory_mb=205, cpu_share=0.333)
    ...
    server.stop()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from harness import cpugroup, memgroup

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"
STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Until `url` answers anything (an HTTP error is an answer); RuntimeError when the
    process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a server started in its own session, and everything it started."""
    signal_group(proc, signal.SIGCONT)  # in case a test froze it
    signal_group(proc, signal.SIGKILL)
    proc.wait()


def wait_empty(group: memgroup.MemoryGroup | cpugroup.CpuGroup, timeout_s: float = 10.0) -> None:
    """Kill whatever is left in a group (a worker gunicorn forked) until it is empty."""
    deadline = time.monotonic() + timeout_s
    while group.pids() and time.monotonic() < deadline:
        for pid in group.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def runtime_python(engine: str = "litert") -> tuple[str, str]:
    """The interpreter a function runs under, and which environment that is.

    LiteRT servers run in `.venv-runtime` (make runtime: only the functions' own requirements,
    as deployed), so nothing the exporter or the tests need (TensorFlow, grpcio, ...) is
    imported by accident. The Keras engine needs TensorFlow: the dev venv."""
    override = os.environ.get("DERMCAM_RUNTIME_PYTHON")
    if engine == "litert" and override:
        return override, "runtime"
    if engine == "litert" and RUNTIME_PYTHON.exists():
        return str(RUNTIME_PYTHON), "runtime"
    return sys.executable, "dev"


def function_env(
    storage_url: str, bucket: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """This process's environment plus what a function needs to find its storage."""
    env = dict(os.environ)
    env.update(
        {
            "STORAGE_EMULATOR_HOST": storage_url,
            "DERMCAM_BUCKET": bucket,
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra or {})
    return env


@dataclass
class Server:
    """A running server and the groups it lives in."""

    proc: subprocess.Popen
    url: str
    started: float  # time.perf_counter() just before the spawn
    memory: memgroup.MemoryGroup | None = None
    cpu: cpugroup.CpuGroup | None = None
    notes: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float | None:
        """CPU time every process of the server has used so far (None: not counted)."""
        return self.cpu.usage_s() if self.cpu is not None else None

    def wait_up(self, timeout: float = 60.0) -> None:
        wait_until_up(self.url, timeout, self.proc)

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its session); `stop` waits and cleans up."""
        if self.alive():
            signal_group(self.proc, signal.SIGCONT)
            signal_group(self.proc, signal.SIGTERM)

    def stop(self, grace_s: float = 0.0) -> None:
        """Stop it (SIGTERM and up to `grace_s` to finish, then SIGKILL), then empty and
        remove its groups."""
        if grace_s > 0:
            self.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc)
        for group in (self.memory, self.cpu):
            if group is not None:
                wait_empty(group)
                group.remove()


def stop_all(servers: Iterable[Server], grace_s: float = STOP_GRACE_S) -> None:
    """Ask every server to stop at once, then wait for each."""
    servers = list(servers)
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop(grace_s)


def start(
    command: list[str],
    url: str,
    *,
    env: dict[str, str],
    log: IO,
    cwd: Path | None = None,
    memory_mb: int | None = None,
    cpu_share: float | None = None,
    count_cpu: bool = False,
    drop_cache: bool = False,
) -> Server:
    """Spawn `command` (which serves `url`). With `memory_mb`, inside a memory group with that
    hard limit; with `cpu_share` (or `count_cpu`), inside a cpu group limited to that share of
    one vCPU (or unlimited) whose cpuacct counts its CPU. `drop_cache` drops the page cache
    first, so a cold start reads its files from disk. Where the cgroup controllers are not
    writable, the server runs without them and `notes` says so."""
    notes = []
    memory = cpu = None
    if memory_mb is not None:
        if memgroup.available():
            memory = memgroup.MemoryGroup(memory_mb)
        else:
            notes.append("no memory cgroup here: the limit is not applied")
    if cpu_share is not None or count_cpu:
        if cpugroup.available():
            cpu = cpugroup.CpuGroup(cpu_share)
        else:
            notes.append("no cpu cgroup here: the vCPU share is not applied")
    procs = [
        *([memory.procs_file] if memory else []),
        *(cpu.procs_files if cpu else []),
    ]
    if procs:  # join the groups before the program starts, so its imports count too
        join = " && ".join(f"echo $$ > {path}" for path in procs)
        command = ["/bin/sh", "-c", f'{join} && exec "$@"', "sh", *command]
    if drop_cache:
        memgroup.drop_page_cache()
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Server(proc, url, started, memory, cpu, notes)


def start_function(
    name: str,
    *,
    env: dict[str, str],
    log: IO,
    port: int | None = None,
    python: str = sys.executable,
    source: Path | None = None,
    **groups: object,
) -> Server:
    """A function's functions-framework server on loopback (a free port unless given).
    `source` is its main.py (default: functions/<name>/main.py); `groups` as for `start`."""
    source = source or ROOT / "functions" / name / "main.py"
    port = port or free_port()
    command = [
        python,
        "-m",
        "functions_framework",
        "--target",
        name,
        "--source",
        str(source),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    return start(command, f"http://{HOST}:{port}", env=env, log=log, **groups)  # type: ignore[arg-type]
