"""Per-client request limits: a token bucket per client and function, in the instance.

Where the counter lives, and why: in each instance's memory. A shared counter (Firestore,
Memorystore) costs a network round trip on every request and a service to run and pay for,
to be exact about a bound the platform already caps: an instance admits at most
`per_minute` requests a minute from one client (with a burst of `burst`: by default a
minute's worth, so a visitor clicking through the classes and methods of one photograph, a
request each, is not refused; the sustained rate is the bound), so across the
fleet one client gets at most `per_minute × max_instances` a minute sustained (twice that in
one minute while the bursts are spent), which
`deploy.sh` prints beside the spending bound it derives max-instances from. A client is the
address Google's front end saw: the last `X-Forwarded-For` hop, the one it appends on a
function's own URL (the hops before it are the caller's to write). Not the App Check token's
subject: that names the app, the same for everyone who opens the page. The table holds at most
`MAX_CLIENTS` buckets; the longest idle go first, so a flood of addresses costs bounded
memory, not the instance.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from dermcam.errors import RateLimited

MAX_CLIENTS = 10_000


class RateLimiter:
    """`allow(client)` raises RateLimited once `client` is past `per_minute`."""

    def __init__(
        self, per_minute: int, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = float(burst or per_minute)  # a minute's worth by default
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def allow(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(
                    f"Too many requests from this client; try again in {wait} s.", wait
                )
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)


def client_of(forwarded_for: str | None, remote_addr: str | None) -> str:
    """The address a request is counted under (module docstring)."""
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    return hops[-1] if hops else (remote_addr or "unknown")
