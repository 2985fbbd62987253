"""Turns bench results into bench/results.md and the README's headline table."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from model_store.fitcheck import BASELINE_MB, SLOWDOWN_LIMIT, WARM_BUDGET_S, Run


def _fmt(value, digits: int = 0) -> str:  # noqa: ANN001
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def _p50(row: dict, kind: str, key: str = "latency_ms") -> float | None:
    return (row.get(key, {}).get(kind) or {}).get("p50")


def _run(row: dict) -> Run:
    return Run(**{k: v for k, v in row.items() if k != "model"})


def fits(row: dict, baseline: dict | None) -> bool:
    """fitcheck's own rule, applied to a stored row."""
    return _run(row).fits(_run(baseline) if baseline else None)


def one_line(row: dict) -> str:
    return (
        f"{row['model']:>15} {row['function']:>8} {row['engine']:>7} {row['limit_mb']:>5} MiB:"
        f" cold {_fmt(row['cold_start_s'], 2)} s, peak {_fmt(row['peak_mb'])} MiB,"
        f" OOM {row['oom_kills']}, errors {row['errors']},"
        f" p50 small {_fmt(_p50(row, 'small'), 1)} ms, large {_fmt(_p50(row, 'large'), 1)} ms"
        f"{' (' + row['note'] + ')' if row['note'] else ''}"
    )


def _groups(results: dict) -> dict:
    groups = defaultdict(dict)
    for row in results["runs"]:
        groups[(row["model"], row["function"], row["engine"])][row["limit_mb"]] = row
    return groups


def summary(results: dict) -> list[dict]:
    rows = []
    for (model, function, engine), by_tier in _groups(results).items():
        baseline = by_tier.get(BASELINE_MB)
        tier = next(
            (t for t in sorted(by_tier) if t != BASELINE_MB and fits(by_tier[t], baseline)), None
        )
        if tier is None and baseline and fits(baseline, None):
            tier = BASELINE_MB  # 2 GiB is a tier too: it held there and nowhere smaller
        held = by_tier.get(tier) if tier else None
        p50_all = _p50(held, "all") if held else None
        rows.append(
            {
                "model": model,
                "function": function,
                "engine": engine,
                "tier_mb": tier,
                "peak_mb": baseline["peak_mb"] if baseline else None,
                "cold_start_s": baseline["cold_start_s"] if baseline else None,
                "p50_small_ms": _p50(baseline, "small") if baseline else None,
                "p50_large_ms": _p50(baseline, "large") if baseline else None,
                "compute_small_ms": _p50(baseline, "small", "compute_ms") if baseline else None,
                # Cloud Functions bills memory by instance time: tier × busy seconds, concurrency 1.
                "gb_s_per_1000": round(tier / 1024 * p50_all, 2) if tier and p50_all else None,
            }
        )
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    by_key = {(r["model"], r["function"], r["engine"]): r for r in rows}
    out = []
    for (model, function, engine), lite in by_key.items():
        tf = by_key.get((model, function, "keras"))
        if engine != "litert" or not tf:
            continue

        def ratio(key: str, lite=lite, tf=tf) -> float | None:  # noqa: ANN001
            a, b = lite.get(key), tf.get(key)
            return round(b / a, 1) if a and b else None

        peak_x_p50 = None
        if lite["peak_mb"] and tf["peak_mb"] and lite["p50_small_ms"] and tf["p50_small_ms"]:
            peak_x_p50 = round(
                tf["peak_mb"] * tf["p50_small_ms"] / (lite["peak_mb"] * lite["p50_small_ms"]), 1
            )
        out.append(
            {
                "model": model,
                "function": function,
                "tier": ratio("tier_mb"),
                "memory": ratio("peak_mb"),
                "cold_start": ratio("cold_start_s"),
                "latency": ratio("p50_small_ms"),
                # Memory × time as billed: GB-s at the smallest tier each engine held.
                "gb_s": ratio("gb_s_per_1000"),
                # The same product from the unconstrained run: touched memory × small-PNG p50.
                "peak_x_p50": peak_x_p50,
            }
        )
    return out


def headline(results: dict) -> str:
    lines = [
        "| model | function | engine | smallest tier that fits | peak at 2 GiB (MiB) | "
        "cold start (s) | p50 small PNG (ms) | p50 12-MP JPEG (ms) | GB-s / 1000 req |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary(results):
        tier = f"{r['tier_mb']} MiB" if r["tier_mb"] else f"none ≤ {BASELINE_MB} MiB"
        lines.append(
            f"| {r['model']} | {r['function']} | {r['engine']} | {tier} | "
            f"{_fmt(r['peak_mb'])} | {_fmt(r['cold_start_s'], 2)} | "
            f"{_fmt(r['p50_small_ms'], 1)} | {_fmt(r['p50_large_ms'], 1)} | "
            f"{_fmt(r['gb_s_per_1000'], 2)} |"
        )
    return "\n".join(lines)


def ratio_table(results: dict) -> str:
    lines = [
        "| model | function | smallest tier | peak memory | cold start | p50 (small) | "
        "memory × time (GB-s) | peak × p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ratios(summary(results)):
        lines.append(
            f"| {r['model']} | {r['function']} | {_fmt(r['tier'], 1)}× | "
            f"{_fmt(r['memory'], 1)}× | {_fmt(r['cold_start'], 1)}× | "
            f"{_fmt(r['latency'], 1)}× | {_fmt(r['gb_s'], 1)}× | {_fmt(r['peak_x_p50'], 1)}× |"
        )
    return "\n".join(lines)


def markdown(results: dict) -> str:
    m = results["machine"]
    parts = [
        "# dermcam benchmark results",
        "",
        f"Measured {results['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"kernel {m['kernel']}, code at commit {results.get('commit', 'unknown')}. Memory limits: "
        + (
            "cgroup v1 memory groups (limit = memsw limit), page cache dropped before each cold "
            "start."
            if m["cgroup_v1"]
            else "NO cgroup available: peaks are process RSS."
        )
        + f" {results['warm_requests']} warm requests per run, two in three a distinct small PNG "
        "(256 px), one in three a distinct 4000×3000 JPEG. Generated by `make bench` "
        "(`python -m bench.run`); the same numbers are in results.json.",
        "",
        "A function *fits* a tier when it had no OOM kill, every request answered 200 and its "
        f"p50 stayed within {SLOWDOWN_LIMIT}× of the unconstrained {BASELINE_MB} MiB run. "
        "Peak is the group's `memory.max_usage_in_bytes` (all processes of the server, page "
        "cache included). Compute is the server's time without storage calls; engine is the "
        "inference step alone. A run whose warm requests exceed "
        f"{WARM_BUDGET_S:.0f} s is stopped as thrashing. A function that fits none of "
        "128/256/512 MiB is also run at 1024 MiB; 2 GiB counts as a tier when it held. "
        "GB-s / 1000 requests = smallest fitting "
        "tier × p50 latency (all requests) × 1000: the memory Cloud Functions bills, one "
        "request at a time.",
        "",
        "## Summary",
        "",
        headline(results),
        "",
        "## TensorFlow engine ÷ LiteRT engine (same run; higher is better for LiteRT)",
        "",
        "Memory × time is GB-s / 1000 requests, each engine at the smallest tier it held (what "
        "a user pays). The last column is the same product from the unconstrained runs "
        "(peak, page cache included, × small-PNG p50); peak, cold start and p50 are from the "
        "2 GiB runs.",
        "",
        ratio_table(results),
    ]
    parts += [
        "",
        "## Every run",
        "",
        "| model | function | engine | limit MiB | cold start s | peak MiB | anon MiB "
        "(end) | OOM kills | errors | p50/p95 small ms | p50/p95 large ms | "
        "compute p50 small/large ms | engine p50 small/large ms | fits |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = _groups(results)
    for (model, function, engine), by_tier in groups.items():
        baseline = by_tier.get(BASELINE_MB)
        for limit in sorted(by_tier):
            r = by_tier[limit]
            small, large = r["latency_ms"].get("small") or {}, r["latency_ms"].get("large") or {}
            parts.append(
                f"| {model} | {function} | {engine} | {limit} | {_fmt(r['cold_start_s'], 2)} | "
                f"{_fmt(r['peak_mb'])} | {_fmt(r['anon_mb'])} | {r['oom_kills']} | "
                f"{r['errors']}/{r['requests']} | {_fmt(small.get('p50'), 1)}/"
                f"{_fmt(small.get('p95'), 1)} | {_fmt(large.get('p50'), 1)}/"
                f"{_fmt(large.get('p95'), 1)} | {_fmt(_p50(r, 'small', 'compute_ms'), 1)}/"
                f"{_fmt(_p50(r, 'large', 'compute_ms'), 1)} | "
                f"{_fmt(_p50(r, 'small', 'inference_ms'), 1)}/"
                f"{_fmt(_p50(r, 'large', 'inference_ms'), 1)} | "
                f"{'yes' if limit != BASELINE_MB and fits(r, baseline) else '–'} |"
            )
    if results.get("quantization"):
        parts += [
            "",
            "## Quantisation (LiteRT, 2 GiB runs, against float32 of the same model)",
            "",
            "| model | quantisation | artifacts MB (float32) | top-1 agreement | "
            "heatmap r median (min) | predict peak MiB / p50 ms | "
            "gradcam peak MiB / p50 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in results["quantization"]:
            parts.append(
                f"| {q['model']} | {q['quantization']} | {q['size_mb']} ({q['float32_size_mb']})"
                f" | {q['top1_agreement']} | {q['cam_r_median']} ({q['cam_r_min']}) | "
                f"{_fmt(q['predict']['peak_mb'])} / {_fmt(q['predict']['p50_ms'], 1)} | "
                f"{_fmt(q['gradcam']['peak_mb'])} / {_fmt(q['gradcam']['p50_ms'], 1)} |"
            )
    parts += ["", "## Targets", "", *targets(results), ""]
    return "\n".join(parts)


def targets(results: dict) -> list[str]:
    """The issue's targets, judged from this run's figures (not timed tests)."""
    rows = {(r["model"], r["function"], r["engine"]): r for r in summary(results)}
    by_run = {(r["model"], r["function"], r["engine"], r["limit_mb"]): r for r in results["runs"]}
    lines = ["| target | measured | met |", "|---|---|---|"]

    def add(text: str, measured: str, met: bool | None) -> None:
        lines.append(f"| {text} | {measured} | {'–' if met is None else 'yes' if met else 'no'} |")

    def tier(model: str, function: str, engine: str = "litert") -> int | None:
        row = rows.get((model, function, engine))
        return row["tier_mb"] if row else None

    def tier_text(value: int | None) -> str:
        return f"{value} MiB" if value else f"none ≤ {BASELINE_MB} MiB"

    for model, function, want, stretch in (
        ("efficientnetb0", "predict", 128, None),
        ("efficientnetb0", "gradcam", 256, 128),
        ("resnet50", "predict", 512, 256),
        ("resnet50", "gradcam", 512, 256),
    ):
        got = tier(model, function)
        if (model, function, "litert") not in rows:
            continue
        add(f"{model} {function} fits {want} MiB", tier_text(got), bool(got and got <= want))
        if stretch:
            add(
                f"stretch: {model} {function} fits {stretch} MiB",
                tier_text(got),
                bool(got and got <= stretch),
            )
    for function in ("predict", "gradcam"):
        row = rows.get(("efficientnetb0", function, "litert"))
        if row:
            add(
                f"efficientnetb0 {function} cold start ≤ 1.0 s (page cache dropped)",
                f"{row['cold_start_s']} s",
                row["cold_start_s"] <= 1.0,
            )
    for function, kind, limit in (
        ("predict", "small", 20),
        ("predict", "large", 80),
        ("gradcam", "small", 40),
    ):
        run = by_run.get(("efficientnetb0", function, "litert", BASELINE_MB))
        if run:
            value = _p50(run, kind, "compute_ms")
            what = "small PNG" if kind == "small" else "12-MP JPEG"
            add(
                f"efficientnetb0 {function} warm p50 ≤ {limit} ms, {what}, storage excluded",
                f"{value} ms",
                value is not None and value <= limit,
            )
    for r in ratios(list(rows.values())):
        add(
            f"{r['model']} {r['function']}: TensorFlow ÷ LiteRT memory × time (GB-s) ≥ 10×",
            f"{_fmt(r['gb_s'], 1)}× (peak × p50: {_fmt(r['peak_x_p50'], 1)}×)",
            (r["gb_s"] or 0) >= 10,
        )
    return lines


README_START, README_END = "<!-- bench:headline -->", "<!-- /bench:headline -->"


def update_readme(results: dict, readme: Path) -> None:
    """Put the headline table, with its date and machine, between the README's markers."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    m = results["machine"]
    block = (
        f"{README_START}\nMeasured by `make bench` on {results['date'][:10]} ({m['cpu']}, "
        f"{m['cores']} cores, commit {results.get('commit', 'unknown')}; each function a real "
        "functions-framework server in a cgroup "
        "memory group at the tier, page cache dropped before each cold start; details and "
        f"every run in [bench/results.md](bench/results.md)):\n\n{headline(results)}\n\n"
        "TensorFlow engine ÷ LiteRT engine, same run (memory × time: GB-s per 1000 requests, "
        f"each at the smallest tier it held):\n\n{ratio_table(results)}\n"
    )
    readme.write_text(text[:start] + block + text[end:])
