"""Cloud Run functions configurations (memory × vCPU), what each costs, and which to deploy.

Rules and prices as Google publishes them, kept here as named constants so a change is one
edit. Read 2026-11-28:
- CPU with memory: "Configure memory and vCPU limits",
  https://cloud.google.com/functions/docs/configuring/memory (128 MiB → 0.083 vCPU, 256 MiB →
  0.167, 512 MiB → 0.333, 1 GiB → 0.583, 2 GiB → 1).
- `--cpu` overrides: "Configure CPU limits", https://cloud.google.com/run/docs/configuring/cpu
  (0.08 to 1 vCPU in fractions; more than 512 MiB needs at least 0.5 vCPU, more than 1 GiB at
  least 1; fractional CPU needs concurrency 1 and request-based billing).
- Prices: "Cloud Run pricing", https://cloud.google.com/run/pricing, request-based billing,
  Tier 1 regions: $0.000024 per vCPU-second, $0.0000025 per GiB-second, $0.40 per million
  requests; each request's time rounded up to the next 100 ms. (Free tiers not applied.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_CPU = {128: 0.083, 256: 0.167, 512: 0.333, 1024: 0.583, 2048: 1.0}
CPU_OVERRIDES = (0.167, 0.333, 0.5, 1.0)
PRICE_VCPU_SECOND = 0.000024
PRICE_GIB_SECOND = 0.0000025
PRICE_REQUEST = 0.40 / 1_000_000
BILLING_INCREMENT_S = 0.1
# What the recommendation asks of a configuration, by default (both are flags).
MAX_WARM_P50_MS = 300.0
MAX_COLD_START_S = 3.0


def allowed(memory_mb: int, cpu: float) -> bool:
    """Whether Cloud Run accepts `--memory memory_mb --cpu cpu`."""
    if cpu < 0.08 or (cpu > 1 and cpu != int(cpu)):
        return False
    if memory_mb > 1024:
        return cpu >= 1
    if memory_mb > 512:
        return cpu >= 0.5
    return True


def configurations(tiers: Iterable[int]) -> list[tuple[int, float]]:
    """(memory, vCPU) to measure: each tier's default share and the overrides above it."""
    found = []
    for memory in tiers:
        default = DEFAULT_CPU[memory]
        shares = sorted({default, *(c for c in CPU_OVERRIDES if c > default)})
        found.extend((memory, cpu) for cpu in shares if allowed(memory, cpu))
    return found


def billed_seconds(latency_ms: float) -> float:
    """A request's billed instance time: rounded up to the next 100 ms."""
    return math.ceil(round(latency_ms / 1000 / BILLING_INCREMENT_S, 6)) * BILLING_INCREMENT_S


def cost_per_1000(latencies_ms: list[float], memory_mb: int, cpu: float) -> float | None:
    """US dollars for 1,000 requests like these, at concurrency 1 (request-based billing)."""
    if not latencies_ms:
        return None
    rate = cpu * PRICE_VCPU_SECOND + memory_mb / 1024 * PRICE_GIB_SECOND
    total = sum(billed_seconds(ms) * rate + PRICE_REQUEST for ms in latencies_ms)
    return round(total * 1000 / len(latencies_ms), 6)


@dataclass(frozen=True)
class Option:
    """One measured configuration of one function."""

    memory_mb: int
    cpu: float
    fits: bool
    cold_start_s: float | None
    p50_ms: float | None
    cost_per_1000: float | None
    source: str = "measured"  # measured (a real run), predicted, or verified (run to check)

    def meets(self, max_p50_ms: float, max_cold_s: float) -> bool:
        return (
            self.fits
            and self.p50_ms is not None
            and self.p50_ms <= max_p50_ms
            and self.cold_start_s is not None
            and self.cold_start_s <= max_cold_s
            and self.cost_per_1000 is not None
        )

    @property
    def flags(self) -> str:
        return f"--memory {self.memory_mb}Mi --cpu {self.cpu:g}"


def recommend(
    options: list[Option],
    max_p50_ms: float = MAX_WARM_P50_MS,
    max_cold_s: float = MAX_COLD_START_S,
) -> tuple[Option | None, list[Option]]:
    """The cheapest option that fits and meets both targets, and the others ranked by cost
    (those that miss a target after those that meet them)."""
    meeting = sorted(
        (o for o in options if o.meets(max_p50_ms, max_cold_s)), key=lambda o: o.cost_per_1000
    )
    others = [o for o in options if o not in meeting]
    others.sort(key=lambda o: (o.cost_per_1000 is None, o.cost_per_1000 or 0))
    return (meeting[0] if meeting else None), meeting[1:] + others
