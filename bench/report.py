"""Turns bench results into bench/results.md and the README's headline table.

Every run carries its configuration: the memory group's limit (80 % of the tier) and the vCPU
share of its cpu group. A configuration fits when fitcheck's rule says so against the 2 GiB run
with the same share; each function × engine is summarised at the configuration
model_store.fitting.tiers recommends (cheapest that fits and meets the latency targets), beside its
whole-core figures.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from model_store.fitting import tiers
from model_store.fitting.runs import BASELINE_MB, SLOWDOWN_LIMIT, WARM_BUDGET_S, WHOLE_CORE, Run


def _fmt(value, digits: int = 0) -> str:  # noqa: ANN001
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def _p50(row: dict | None, kind: str, key: str = "latency_ms") -> float | None:
    if not row:
        return None
    return (row.get(key, {}).get(kind) or {}).get("p50")


def _run(row: dict) -> Run:
    return Run(**{k: v for k, v in row.items() if k != "model"})


def fits(row: dict, baseline: dict | None) -> bool:
    """fitcheck's own rule, applied to a stored row."""
    return _run(row).fits(_run(baseline) if baseline else None)


def _share(row: dict) -> float:
    return row["cpu"] if row.get("cpu") is not None else WHOLE_CORE


def one_line(row: dict) -> str:
    return (
        f"{row['model']:>15} {row['function']:>8} {row['engine']:>7} {row['limit_mb']:>5} MiB "
        f"{_share(row):.3g} vCPU: cold {_fmt(row['cold_start_s'], 2)} s "
        f"(CPU {_fmt(row.get('startup_cpu_s'), 2)} s), peak {_fmt(row['peak_mb'])} MiB,"
        f" OOM {row['oom_kills']}, errors {row['errors']},"
        f" p50 small {_fmt(_p50(row, 'small'), 1)} ms, large {_fmt(_p50(row, 'large'), 1)} ms"
        f"{' (' + row['note'] + ')' if row['note'] else ''}"
    )


def _groups(results: dict) -> dict:
    groups = defaultdict(list)
    for row in results["runs"]:
        groups[(row["model"], row["function"], row["engine"])].append(row)
    return groups


def _baselines(rows: list[dict]) -> dict[float, dict]:
    return {_share(r): r for r in rows if r["limit_mb"] == BASELINE_MB}


def options(rows: list[dict]) -> list[tuple[tiers.Option, dict]]:
    """Each measured configuration as a tiers.Option, with its row. 2 GiB at a whole core
    counts as a configuration too (what a function that holds nowhere smaller gets)."""
    baselines = _baselines(rows)
    found = []
    for row in rows:
        if row["limit_mb"] == BASELINE_MB and _share(row) != WHOLE_CORE:
            continue  # a share's baseline, not a configuration
        baseline = None if row["limit_mb"] == BASELINE_MB else baselines.get(_share(row))
        option = tiers.Option(
            row.get("tier_mb") or row["limit_mb"],
            _share(row),
            fits(row, baseline),
            row["cold_start_s"],
            _p50(row, "all"),
            row.get("cost_per_1000"),
        )
        found.append((option, row))
    return found


def summary(results: dict) -> list[dict]:
    """Per model × function × engine: the recommended configuration (or, when none meets the
    targets, the cheapest that fits) beside the whole-core run."""
    out = []
    for (model, function, engine), rows in _groups(results).items():
        found = options(rows)
        best, _ = tiers.recommend([o for o, _ in found])
        meets = best is not None
        if best is None:
            fitting = sorted(
                (o for o, _ in found if o.fits and o.cost_per_1000 is not None),
                key=lambda o: o.cost_per_1000,
            )
            best = fitting[0] if fitting else None
        chosen = next((r for o, r in found if o is best), None)
        whole = _baselines(rows).get(WHOLE_CORE)
        out.append(
            {
                "model": model,
                "function": function,
                "engine": engine,
                "memory_mb": best.memory_mb if best else None,
                "cpu": best.cpu if best else None,
                "meets_targets": meets,
                "cold_start_s": chosen["cold_start_s"] if chosen else None,
                "startup_cpu_s": chosen.get("startup_cpu_s") if chosen else None,
                "p50_small_ms": _p50(chosen, "small"),
                "p50_large_ms": _p50(chosen, "large"),
                "cost_per_1000": best.cost_per_1000 if best else None,
                "peak_mb": whole["peak_mb"] if whole else None,
                "whole_cold_start_s": whole["cold_start_s"] if whole else None,
                "whole_startup_cpu_s": whole.get("startup_cpu_s") if whole else None,
                "whole_p50_small_ms": _p50(whole, "small"),
                "whole_p50_large_ms": _p50(whole, "large"),
                "whole_cost_per_1000": whole.get("cost_per_1000") if whole else None,
            }
        )
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """TensorFlow engine ÷ LiteRT engine for each model and function (same run)."""
    by_key = {(r["model"], r["function"], r["engine"]): r for r in rows}
    out = []
    for (model, function, engine), lite in by_key.items():
        tf = by_key.get((model, function, "keras"))
        if engine != "litert" or not tf:
            continue

        def ratio(key: str, lite=lite, tf=tf) -> float | None:  # noqa: ANN001
            a, b = lite.get(key), tf.get(key)
            return round(b / a, 1) if a and b else None

        out.append(
            {
                "model": model,
                "function": function,
                "memory": ratio("memory_mb"),
                "peak": ratio("peak_mb"),
                "cold_start": ratio("whole_cold_start_s"),
                "startup_cpu": ratio("whole_startup_cpu_s"),
                "latency": ratio("whole_p50_small_ms"),
                "cost": ratio("cost_per_1000"),
            }
        )
    return out


def _config(r: dict) -> str:
    if r["memory_mb"] is None:
        return "none holds"
    mark = "" if r["meets_targets"] else " (misses targets)"
    return f"{r['memory_mb']} MiB, {r['cpu']:g} vCPU{mark}"


def headline(results: dict) -> str:
    lines = [
        "| model | function | engine | configuration (memory, vCPU) | cold start (s) | "
        "p50 small PNG (ms) | p50 12-MP JPEG (ms) | $ / 1000 requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary(results):
        cost = r["cost_per_1000"]
        lines.append(
            f"| {r['model']} | {r['function']} | {r['engine']} | {_config(r)} | "
            f"{_fmt(r['cold_start_s'], 2)} | {_fmt(r['p50_small_ms'], 1)} | "
            f"{_fmt(r['p50_large_ms'], 1)} | {'–' if cost is None else f'{cost:.4f}'} |"
        )
    return "\n".join(lines)


def whole_core_table(results: dict) -> str:
    lines = [
        "| model | function | engine | peak at 2 GiB (MiB) | cold start (s) | startup CPU (s) | "
        "p50 small PNG (ms) | p50 12-MP JPEG (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary(results):
        lines.append(
            f"| {r['model']} | {r['function']} | {r['engine']} | {_fmt(r['peak_mb'])} | "
            f"{_fmt(r['whole_cold_start_s'], 2)} | {_fmt(r['whole_startup_cpu_s'], 2)} | "
            f"{_fmt(r['whole_p50_small_ms'], 1)} | {_fmt(r['whole_p50_large_ms'], 1)} |"
        )
    return "\n".join(lines)


def ratio_table(results: dict) -> str:
    lines = [
        "| model | function | memory tier | peak memory | cold start (whole core) | "
        "startup CPU | p50 small (whole core) | $ / 1000 requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ratios(summary(results)):
        lines.append(
            f"| {r['model']} | {r['function']} | {_fmt(r['memory'], 1)}× | "
            f"{_fmt(r['peak'], 1)}× | {_fmt(r['cold_start'], 1)}× | "
            f"{_fmt(r['startup_cpu'], 1)}× | {_fmt(r['latency'], 1)}× | {_fmt(r['cost'], 1)}× |"
        )
    return "\n".join(lines)


def markdown(results: dict) -> str:
    m = results["machine"]
    parts = [
        "# dermcam benchmark results",
        "",
        f"Measured {results['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"kernel {m['kernel']}, code at commit {results.get('commit', 'unknown')}. Each "
        "configuration: cgroup v1 memory group (limit = memsw limit) at 80 % of the tier and "
        "cpu group with a CFS quota of the configuration's vCPU share; page cache dropped "
        f"before each cold start. {results['warm_requests']} warm requests per run, two in "
        "three a distinct small PNG (256 px), one in three a distinct 4000×3000 JPEG. Cold "
        "start: spawn → first 200 to a request as the page sends it (gradcam: no class); "
        "startup CPU: the cpu group's cpuacct at that moment. Generated by `make bench` "
        "(`python -m bench.run`); the same numbers are in results.json.",
        "",
        "A configuration *fits* when it had no OOM kill, every request answered 200 and its "
        f"p50 stayed within {SLOWDOWN_LIMIT}× of the same function at {BASELINE_MB} MiB with "
        "the same vCPU share (so they differ only in memory). A run whose warm requests exceed "
        f"{WARM_BUDGET_S:.0f} s is stopped as thrashing. Cost: each request's measured round "
        "trip rounded up to 100 ms, billed as vCPU-seconds and GiB-seconds plus the request "
        "fee at Cloud Run's request-based prices (model_store/fitting/tiers.py has them with their "
        "source), per 1,000 requests of this mix. The recommended configuration is the "
        f"cheapest that fits with warm p50 ≤ {tiers.MAX_WARM_P50_MS:g} ms and cold start ≤ "
        f"{tiers.MAX_COLD_START_S:g} s.",
        "",
        "## At the recommended configurations",
        "",
        headline(results),
        "",
        "## On a whole core (2 GiB, 1 vCPU), for comparison",
        "",
        whole_core_table(results),
        "",
        "## TensorFlow engine ÷ LiteRT engine (same run; higher is better for LiteRT)",
        "",
        "Memory tier and cost at each engine's recommended (or cheapest fitting) "
        "configuration; the rest from the whole-core runs.",
        "",
        ratio_table(results),
    ]
    if results.get("startup"):
        from bench import startup

        parts += [
            "",
            "## Where a cold start's CPU goes",
            "",
            startup.report(results["startup"], "b15beb7"),
        ]
    parts += [
        "",
        "## Every run",
        "",
        "| model | function | engine | limit MiB | vCPU | cold start s | startup CPU s | "
        "peak MiB | OOM kills | errors | p50/p95 small ms | p50/p95 large ms | "
        "engine p50 small/large ms | $ / 1000 | fits |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, function, engine), rows in _groups(results).items():
        fitted = {id(r): o.fits for o, r in options(rows)}
        for r in rows:
            small, large = r["latency_ms"].get("small") or {}, r["latency_ms"].get("large") or {}
            cost = r.get("cost_per_1000")
            parts.append(
                f"| {model} | {function} | {engine} | {r['limit_mb']} | {_share(r):g} | "
                f"{_fmt(r['cold_start_s'], 2)} | {_fmt(r.get('startup_cpu_s'), 2)} | "
                f"{_fmt(r['peak_mb'])} | {r['oom_kills']} | "
                f"{r['errors']}/{r['requests']} | {_fmt(small.get('p50'), 1)}/"
                f"{_fmt(small.get('p95'), 1)} | {_fmt(large.get('p50'), 1)}/"
                f"{_fmt(large.get('p95'), 1)} | "
                f"{_fmt(_p50(r, 'small', 'inference_ms'), 1)}/"
                f"{_fmt(_p50(r, 'large', 'inference_ms'), 1)} | "
                f"{'–' if cost is None else f'{cost:.4f}'} | "
                f"{'yes' if fitted.get(id(r)) else ('–' if id(r) not in fitted else 'no')} |"
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
    """The issues' targets, judged from this run's figures (not timed tests)."""
    rows = {(r["model"], r["function"], r["engine"]): r for r in summary(results)}
    lines = ["| target | measured | met |", "|---|---|---|"]

    def add(text: str, measured: str, met: bool | None) -> None:
        lines.append(f"| {text} | {measured} | {'–' if met is None else 'yes' if met else 'no'} |")

    for function in ("predict", "gradcam"):
        row = rows.get(("demo", function, "litert"))
        if row and row["cold_start_s"] and row["whole_cold_start_s"]:
            ratio = row["cold_start_s"] / row["whole_cold_start_s"]
            add(
                f"demo {function}: cold start at the recommended configuration ({_config(row)}) "
                "≤ 3× its whole-core cold start",
                f"{row['cold_start_s']:.2f} s ÷ {row['whole_cold_start_s']:.2f} s = {ratio:.1f}×",
                ratio <= 3,
            )
    startup = results.get("startup")
    if startup:
        from bench import startup as anatomy

        for function, limit in (("gradcam", 0.5), ("predict", 0.8)):
            today = anatomy._find(startup, function, "today", "first answer as the page asks")
            before = anatomy._find(startup, function, "b15beb7", "first answer as the page asks")
            if today and before:
                ratio = today["startup_cpu_s"] / before["startup_cpu_s"]
                add(
                    f"{function}: startup CPU ≤ {limit}× that of b15beb7",
                    f"{today['startup_cpu_s']:.3f} s ÷ {before['startup_cpu_s']:.3f} s = "
                    f"{ratio:.2f}×",
                    ratio <= limit,
                )
    for model, function, want in (
        ("efficientnetb0", "predict", 128),
        ("efficientnetb0", "gradcam", 256),
        ("resnet50", "predict", 512),
        ("resnet50", "gradcam", 512),
    ):
        row = rows.get((model, function, "litert"))
        if row:
            got = row["memory_mb"]
            add(
                f"{model} {function} served within {want} MiB",
                f"{got} MiB" if got else "none",
                bool(got and got <= want),
            )
    for r in ratios(list(rows.values())):
        add(
            f"{r['model']} {r['function']}: TensorFlow ÷ LiteRT cost per 1000 requests ≥ 10×",
            f"{_fmt(r['cost'], 1)}×",
            (r["cost"] or 0) >= 10,
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
        "functions-framework server in a cgroup memory group at the tier **and** a cpu group "
        "with the configuration's vCPU share, page cache dropped before each cold start; "
        f"details and every run in [bench/results.md](bench/results.md)). At the configuration "
        "recommended for each (cheapest that fits with warm p50 ≤ 300 ms and cold start ≤ "
        f"3 s; Cloud Run's request-based prices):\n\n{headline(results)}\n\n"
        f"On a whole core (2 GiB, 1 vCPU), for comparison:\n\n{whole_core_table(results)}\n\n"
        "TensorFlow engine ÷ LiteRT engine, same run:\n\n"
        f"{ratio_table(results)}\n"
    )
    readme.write_text(text[:start] + block + text[end:])
