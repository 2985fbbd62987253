"""Debian's Chromium under Playwright, as the page's users get it (Playwright cannot download
its own browser here). The flags keep it off the network it would otherwise call at every
start: this machine's closed network refuses those connections, many at a time."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def executable() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is missing: `make test` installs it (apt-get chromium)")
    return found


def launch(playwright: Any) -> Any:
    """A headless Chromium from a `sync_playwright()` context."""
    return playwright.chromium.launch(executable_path=executable(), args=CHROMIUM_FLAGS)
