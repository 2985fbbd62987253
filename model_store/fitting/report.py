"""A fit check's report in words: each function's fit, the recommended configuration and the
runners-up."""

from __future__ import annotations

from model_store.fitting import tiers
from model_store.fitting.runs import MARGIN


def recommendation(
    result: dict,
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> tuple[tiers.Option | None, list[tiers.Option]]:
    """The recommended option and the others, cheapest first. A predicted fit check names its
    recommendation (the cheapest that met the targets when run for real); an exhaustive one
    leaves it to the measured options."""
    options = [tiers.Option(**o) for o in result["options"]]
    if "recommended" not in result:
        return tiers.recommend(options, max_p50_ms, max_cold_s)
    best = tiers.Option(**result["recommended"]) if result["recommended"] else None
    _, others = tiers.recommend([o for o in options if o != best], max_p50_ms, max_cold_s)
    return best, others


def describe(
    report: dict[str, dict],
    max_p50_ms: float = tiers.MAX_WARM_P50_MS,
    max_cold_s: float = tiers.MAX_COLD_START_S,
) -> str:
    """The fit of each function, its recommended configuration and the trade-offs."""
    lines = []
    for function, result in report.items():
        tier = f"{result['tier_mb']} MiB" if result["tier_mb"] else "none up to 1024 MiB"
        how = "" if result["cgroup"] else " (no cgroup here: estimated from process RSS)"
        whole = result["whole_core"]
        lines.append(
            f"{function}: fits {tier} with a {MARGIN:.0%} margin{how}; on a whole core: cold "
            f"start {_fmt(whole['cold_start_s'], 's')}, startup CPU "
            f"{_fmt(whole['startup_cpu_s'], 's')}, p50 {_fmt(_p50_of(whole), 'ms')}"
        )
        if whole.get("errors") or not whole.get("complete", True):
            lines.append(
                f"  it failed at 2 GiB on a whole core too ({whole.get('note') or 'errors'}): "
                "not a matter of memory; the server's log says why"
            )
        best, others = recommendation(result, max_p50_ms, max_cold_s)
        if best is None:
            lines.append(
                f"  no configuration meets warm p50 <= {max_p50_ms:g} ms and cold start <= "
                f"{max_cold_s:g} s; the measured ones:"
            )
        else:
            lines.append(f"  recommended: {best.flags} (${best.cost_per_1000:.4f} / 1000 requests)")
        lines.append("  memory  vCPU   fits  cold start  p50 (mix)  $ / 1000 requests  figures")
        for option in ([best] if best else []) + others[:5]:
            lines.append(
                f"  {option.memory_mb:>4}Mi  {option.cpu:<5g}  {'yes' if option.fits else 'no':<4}"
                f"  {_fmt(option.cold_start_s, 's'):>10}  {_fmt(option.p50_ms, 'ms'):>9}"
                f"  {'–' if option.cost_per_1000 is None else f'{option.cost_per_1000:.4f}':>17}"
                f"  {option.source}"
            )
    return "\n".join(lines)


def _p50_of(run: dict) -> float | None:
    return (run.get("latency_ms", {}).get("all") or {}).get("p50")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.2f} s" if unit == "s" else f"{value:.0f} ms"
