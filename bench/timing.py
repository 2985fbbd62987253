"""The benches' one way of timing a call: its median over repeats, in milliseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(call: Callable[[], object], repeats: int, digits: int = 4) -> float:
    """Median wall time of `call()` over `repeats` runs (the caller warms it first)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return round(statistics.median(seconds) * 1000, digits)
