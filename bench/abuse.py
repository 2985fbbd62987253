"""The abuse bounds' own cost, per request, on this machine: App Check verification warm
(keys cached) and cold (the key set read first), and the rate limiter's check. Medians of
`--repeats`, one thread; CPU-bound, so at a tier's vCPU share (0.333) each takes about three
times as long. Written to bench/abuse.json and quoted in docs/RELIABILITY.md.

    python -m bench.abuse [--repeats 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.timing import median_ms
from dermcam.appcheck import AppCheckVerifier
from dermcam.ratelimit import RateLimiter
from devstack.appcheck import PROJECT_NUMBER, LocalAppCheck

OUT = Path(__file__).resolve().parent / "abuse.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse")
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        local = LocalAppCheck(Path(tmp))
        token = local.mint()
        cold = []
        for _ in range(20):  # a new instance: its first token reads the key set
            verifier = AppCheckVerifier(PROJECT_NUMBER, local.jwks_url)
            started = time.perf_counter()
            verifier.verify(token)
            cold.append(time.perf_counter() - started)
        warm = median_ms(lambda: verifier.verify(token), args.repeats)
    limiter = RateLimiter(per_minute=10**9)
    addresses = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(args.repeats)]
    counter = iter(addresses * 2)
    figures = {
        "appcheck_verify_warm_ms": warm,
        "appcheck_verify_cold_ms": round(statistics.median(cold) * 1000, 3),
        "ratelimit_allow_ms": median_ms(lambda: limiter.allow(next(counter)), args.repeats),
        "repeats": args.repeats,
        "at": time.strftime("%Y-%m-%d"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
