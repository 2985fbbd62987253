"""bench/report.py: tiers, GB-s and the engine ratios from a run's rows (no servers here)."""

from bench import report


def row(engine, limit, p50, *, oom=0, errors=0, peak=100.0, cold=0.5, function="predict"):
    answered = cold is not None
    latency = {"p50": p50, "p95": p50, "n": 10} if answered else None
    return {
        "model": "m",
        "function": function,
        "engine": engine,
        "limit_mb": limit,
        "cgroup": True,
        "cold_start_s": cold,
        "peak_mb": peak,
        "anon_mb": peak / 2,
        "oom_kills": oom,
        "errors": errors,
        "requests": 10,
        "latency_ms": {"small": latency, "large": latency, "all": latency},
        "compute_ms": {"small": latency, "large": latency},
        "note": "",
    }


def results(runs):
    return {
        "date": "2026-11-27T00:00:00+00:00",
        "machine": {"cpu": "cpu", "cores": 2, "python": "3", "kernel": "k", "cgroup_v1": True},
        "commit": "abc1234",
        "warm_requests": 10,
        "tiers_mb": [128, 256, 512],
        "runs": runs,
        "quantization": [],
    }


RUNS = [
    row("litert", 2048, 10.0, peak=150),
    row("litert", 128, 30.0),  # too slow: thrashing is not a fit
    row("litert", 256, 11.0),
    row("litert", 512, 10.0),
    row("keras", 2048, 40.0, peak=700, cold=4.0),
    row("keras", 128, None, oom=3, cold=None),
    row("keras", 256, None, oom=3, cold=None),
    row("keras", 512, 45.0, oom=2, errors=2),
    row("keras", 1024, 42.0),
]


def test_smallest_tier_needs_no_oom_no_error_and_the_baseline_speed():
    by_engine = {r["engine"]: r for r in report.summary(results(RUNS))}
    assert by_engine["litert"]["tier_mb"] == 256
    assert by_engine["keras"]["tier_mb"] == 1024
    # GB-s per 1000 requests = tier in GiB × p50 in ms
    assert by_engine["litert"]["gb_s_per_1000"] == round(0.25 * 11.0, 2)
    assert by_engine["keras"]["gb_s_per_1000"] == 42.0


def test_two_gib_counts_as_a_tier_only_when_it_held():
    held = [r for r in RUNS if r["limit_mb"] != 1024]
    keras = next(r for r in report.summary(results(held)) if r["engine"] == "keras")
    assert keras["tier_mb"] == 2048 and keras["gb_s_per_1000"] == 80.0
    failed = [*held[:4], row("keras", 2048, 40.0, errors=1), *held[5:8]]
    keras = next(r for r in report.summary(results(failed)) if r["engine"] == "keras")
    assert keras["tier_mb"] is None and keras["gb_s_per_1000"] is None


def test_a_run_stopped_early_does_not_fit():
    stopped = [*RUNS[:2], {**row("litert", 256, 11.0), "complete": False}, *RUNS[3:]]
    lite = next(r for r in report.summary(results(stopped)) if r["engine"] == "litert")
    assert lite["tier_mb"] == 512


def test_ratios_and_targets_use_billed_memory_times_time():
    (ratio,) = report.ratios(report.summary(results(RUNS)))
    assert ratio["tier"] == 4.0 and ratio["latency"] == 4.0 and ratio["cold_start"] == 8.0
    assert ratio["gb_s"] == round(42.0 / 2.75, 1)
    assert ratio["peak_x_p50"] == round(700 * 40 / (150 * 10), 1)
    line = next(t for t in report.targets(results(RUNS)) if "memory × time" in t)
    assert "15.3×" in line and line.endswith("| yes |")


def test_markdown_lists_every_run():
    text = report.markdown(results(RUNS))
    assert text.count("| m | predict |") == len(RUNS) + 3  # + 2 summary rows, 1 ratio row
    assert "1024 MiB" in text and "commit abc1234" in text


def test_readme_headline_is_replaced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_START}\nSTALE-TABLE\n{report.README_END}\n\nrest\n")
    report.update_readme(results(RUNS), readme)
    text = readme.read_text()
    assert "STALE-TABLE" not in text and text.endswith(f"{report.README_END}\n\nrest\n")
    assert "on 2026-11-27 (cpu, 2 cores, commit abc1234;" in text
    assert "| m | predict | 4.0× |" in text
