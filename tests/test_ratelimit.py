"""dermcam.ratelimit: a token bucket per client in the instance, on a clock of our own; and
the functions over HTTP answering 429 with Retry-After before any work."""

from __future__ import annotations

import pytest
import requests

from dermcam import ratelimit
from dermcam.errors import RateLimited
from dermcam.ratelimit import RateLimiter, client_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_then_a_retry_after():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.allow("a")
    with pytest.raises(RateLimited) as refused:
        limiter.allow("a")
    assert refused.value.status == 429 and refused.value.retry_after == 1
    limiter.allow("b")  # another client has its own bucket
    clock.now += 1.0  # one request a second comes back
    limiter.allow("a")
    with pytest.raises(RateLimited):
        limiter.allow("a")


def test_by_default_a_visitor_may_send_a_minutes_worth_at_once():
    """One photograph explored on the page: a gradcam request per class or method clicked."""
    limiter = RateLimiter(per_minute=30, clock=Clock())
    for _ in range(30):
        limiter.allow("a")
    with pytest.raises(RateLimited):
        limiter.allow("a")


def test_refused_requests_do_not_buy_time():
    """A client hammering a full bucket waits as long as one that waits quietly."""
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=1, clock=clock)
    limiter.allow("a")
    for _ in range(50):
        clock.now += 0.1
        with pytest.raises(RateLimited):
            limiter.allow("a")
    clock.now += 5.0  # 10 s after the first: one token back
    limiter.allow("a")


def test_a_flood_of_addresses_costs_bounded_memory(monkeypatch):
    monkeypatch.setattr(ratelimit, "MAX_CLIENTS", 100)
    limiter = RateLimiter(per_minute=60, clock=Clock())
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 100


def test_the_client_is_the_hop_googles_front_end_appended():
    assert client_of("6.6.6.6, 203.0.113.7", "10.0.0.1") == "203.0.113.7"
    assert client_of(None, "10.0.0.1") == "10.0.0.1"
    assert client_of(" , ", None) == "unknown"


def test_the_function_answers_429_with_retry_after(single_function, tmp_path):
    url, _ = single_function(
        "predict",
        {"DERMCAM_RATE_LIMIT_PER_MINUTE": "1", "DERMCAM_MODEL_DIR": str(tmp_path / "none")},
        with_storage=False,
    )
    answers = [requests.get(url, params={"model": "1"}, timeout=30) for _ in range(3)]
    refused = answers[-1]  # a burst of one at 1 a minute (the readiness probe may take it)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
