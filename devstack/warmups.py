"""Warmup pings for `make run`, as Cloud Scheduler sends them to the deployed functions.

Each function's `GET ?warmup=1` on a cron schedule (deploy.sh's `*/5 * * * *` unless
DERMCAM_WARMUP_SCHEDULE says otherwise; `off` turns them off), each ping logged with what the
function answered.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from devstack.cloudscheduler import cron_fields, due

DEFAULT_SCHEDULE = "*/5 * * * *"


def ping(name: str, url: str) -> str:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url}?warmup=1", timeout=120) as answer:  # noqa: S310
            body = json.loads(answer.read())
        ms = (time.monotonic() - started) * 1000
        memory = body.get("memory", {})
        return (
            f"warmup {name}: {answer.status} in {ms:.0f} ms (model loads "
            f"{body.get('model_loads')}, RSS {memory.get('rss_mb')} MiB)"
        )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"warmup {name}: failed ({exc})"


def fire_due(
    urls: dict[str, str], schedule: str, moment: dt.datetime, log: Callable[[str], None]
) -> bool:
    """Ping every URL if `schedule` is due at `moment` (a whole minute)."""
    if not due(schedule, moment):
        return False
    for name, url in urls.items():
        log(ping(name, url))
    return True


def start(urls: dict[str, str], schedule: str, log: Callable[[str], None] = print) -> bool:
    """Ping every URL on `schedule` from a daemon thread; False when the schedule is off."""
    if schedule.strip().lower() in ("", "off", "none", "0"):
        return False
    cron_fields(schedule)  # a bad schedule fails now, not silently later

    def loop() -> None:
        last = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        while True:
            time.sleep(1.0)
            now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
            while last < now:
                last += dt.timedelta(minutes=1)
                fire_due(urls, schedule, last, log)

    threading.Thread(target=loop, daemon=True, name="warmups").start()
    return True
