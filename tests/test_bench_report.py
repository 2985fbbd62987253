"""bench/report.py: configurations, fits, cost, the recommendation and the engine ratios from
a run's rows (no servers here)."""

from bench import report
from model_store.fitting import tiers


def row(
    engine,
    limit,
    cpu,
    p50,
    *,
    tier=None,
    oom=0,
    errors=0,
    peak=100.0,
    cold=0.5,
    startup=0.4,
    function="predict",
):
    answered = cold is not None
    latency = {"p50": p50, "p95": p50, "n": 10} if answered else None
    tier = tier or (2048 if limit == 2048 else None)
    cost = tiers.cost_per_1000([p50] * 10, tier, cpu) if answered and tier and p50 else None
    return {
        "model": "m",
        "function": function,
        "engine": engine,
        "limit_mb": limit,
        "cgroup": True,
        "cpu": cpu,
        "tier_mb": tier,
        "cold_start_s": cold,
        "startup_cpu_s": startup if answered else None,
        "cost_per_1000": cost,
        "peak_mb": peak,
        "anon_mb": peak / 2,
        "oom_kills": oom,
        "errors": errors,
        "requests": 10,
        "latency_ms": {"small": latency, "large": latency, "all": latency},
        "compute_ms": {"small": latency, "large": latency},
        "note": "",
    }


def results(runs, startup=None):
    return {
        "date": "2026-11-27T00:00:00+00:00",
        "machine": {"cpu": "cpu", "cores": 2, "python": "3", "kernel": "k", "cgroup_v1": True},
        "commit": "abc1234",
        "warm_requests": 10,
        "tiers_mb": [128, 256, 512],
        "runs": runs,
        "quantization": [],
        "startup": startup,
    }


RUNS = [
    row("litert", 2048, 1.0, 10.0, peak=150, cold=0.6),
    row("litert", 2048, 0.083, 120.0),
    row("litert", 102, 0.083, 125.0, tier=128, cold=6.0),  # fits, but its cold start is 6 s
    row("litert", 2048, 0.333, 30.0),
    row("litert", 102, 0.333, 31.0, tier=128, cold=1.5),  # fits, meets both targets
    row("keras", 2048, 1.0, 40.0, peak=700, cold=4.0),
    row("keras", 819, 0.583, None, tier=1024, oom=2, cold=None),
    row("keras", 2048, 0.583, 70.0, cold=7.0),
]


def test_the_recommendation_is_the_cheapest_that_meets_the_targets():
    lite = next(r for r in report.summary(results(RUNS)) if r["engine"] == "litert")
    assert (lite["memory_mb"], lite["cpu"]) == (128, 0.333) and lite["meets_targets"]
    assert lite["cost_per_1000"] == tiers.cost_per_1000([31.0] * 10, 128, 0.333)
    assert lite["whole_cold_start_s"] == 0.6 and lite["cold_start_s"] == 1.5


def test_a_function_holding_only_at_2_gib_gets_that_configuration():
    keras = next(r for r in report.summary(results(RUNS)) if r["engine"] == "keras")
    assert (keras["memory_mb"], keras["cpu"]) == (2048, 1.0)
    assert keras["meets_targets"] is False  # cold start 4 s > 3 s


def test_fit_is_judged_against_the_baseline_of_the_same_share():
    slow = [*RUNS[:4], row("litert", 102, 0.333, 60.0, tier=128, cold=1.5), *RUNS[5:]]
    lite = next(r for r in report.summary(results(slow)) if r["engine"] == "litert")
    # 60 ms > 1.25 × 30 ms + 10 ms at the same share: page cache thrash, not a fit. 128 MiB at 0.083
    # still fits but starts in 6 s: 2 GiB at a whole core is what meets both targets.
    assert (lite["memory_mb"], lite["cpu"]) == (2048, 1.0) and lite["meets_targets"]


def test_ratios_compare_cost_at_each_engines_configuration():
    (ratio,) = report.ratios(report.summary(results(RUNS)))
    lite_cost = tiers.cost_per_1000([31.0] * 10, 128, 0.333)
    keras_cost = tiers.cost_per_1000([40.0] * 10, 2048, 1.0)
    assert ratio["cost"] == round(keras_cost / lite_cost, 1)
    assert ratio["cold_start"] == round(4.0 / 0.6, 1) and ratio["memory"] == 16.0


def test_targets_judge_cold_start_and_startup_cpu_ratios():
    demo = [r | {"model": "demo"} for r in RUNS]
    startup = {
        "rows": [
            {
                "function": "gradcam",
                "code": "today",
                "layer": "first answer as the page asks",
                "startup_cpu_s": 0.6,
            },
            {
                "function": "gradcam",
                "code": "b15beb7",
                "layer": "first answer as the page asks",
                "startup_cpu_s": 1.1,
            },
        ]
    }
    lines = report.targets(results(demo, startup))
    cold = next(t for t in lines if "demo predict: cold start" in t)
    assert "1.50 s ÷ 0.60 s = 2.5×" in cold and cold.endswith("| yes |")
    cpu = next(t for t in lines if "gradcam: startup CPU" in t)
    assert "0.55×" in cpu and cpu.endswith("| no |")


def test_markdown_lists_every_run():
    text = report.markdown(results(RUNS))
    assert text.count("| m | predict | litert | ") == 5 + 2  # every run + 2 summary tables
    assert "0.333 vCPU" in text and "commit abc1234" in text


def test_readme_headline_is_replaced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_START}\nSTALE-TABLE\n{report.README_END}\n\nrest\n")
    report.update_readme(results(RUNS), readme)
    text = readme.read_text()
    assert "STALE-TABLE" not in text and text.endswith(f"{report.README_END}\n\nrest\n")
    assert "on 2026-11-27 (cpu, 2 cores, commit abc1234;" in text
    assert "| m | predict | litert | 128 MiB, 0.333 vCPU |" in text
