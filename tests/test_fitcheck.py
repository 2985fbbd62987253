"""The fit-check harness on the demo model: a real server inside a real memory cgroup."""

import json

import pytest

from model_store import fitcheck, memgroup

pytestmark = pytest.mark.skipif(not memgroup.available(), reason="needs the cgroup v1 controller")


@pytest.fixture(scope="module")
def plan():
    return fitcheck.request_plan(7)


def test_plan_mixes_small_pngs_and_large_jpegs(plan):
    kinds = [u.kind for u in plan]
    assert kinds.count("large") == 2 and kinds[0] == "small"
    assert len({u.data for u in plan}) == len(plan)  # distinct: gradcam cannot cache


def test_predict_fits_its_tier(demo_model_dir, plan, tmp_path):
    run = fitcheck.run_function("predict", demo_model_dir, 256, plan, log_dir=tmp_path)
    assert run.cgroup and run.answered and run.errors == 0 and run.oom_kills == 0
    assert 20 < run.peak_mb < 256 and run.requests == len(plan) - 1
    assert run.latency_ms["small"]["n"] == 4 and run.latency_ms["large"]["n"] == 2
    assert run.fits(baseline=None)


def test_gradcam_with_storage_fits_its_tier(demo_model_dir, plan, stack, tmp_path):
    run = fitcheck.run_function(
        "gradcam", demo_model_dir, 256, plan, storage_url=stack.storage_url, log_dir=tmp_path
    )
    assert run.answered and run.errors == 0 and run.oom_kills == 0
    assert run.compute_ms["small"]["p50"] > 0
    assert 0 < run.inference_ms["small"]["p50"] < run.compute_ms["small"]["p50"]


def test_a_thrashing_run_is_stopped_and_does_not_fit(demo_model_dir, plan, tmp_path, monkeypatch):
    monkeypatch.setattr(fitcheck, "WARM_BUDGET_S", 0.0)  # every run is over this budget
    run = fitcheck.run_function("predict", demo_model_dir, 256, plan, log_dir=tmp_path)
    assert run.answered and not run.complete and "stopped" in run.note
    assert run.requests < len(plan) - 1 and not run.fits(baseline=None)


def test_a_tier_too_small_is_reported_not_hidden(demo_model_dir, plan, tmp_path):
    run = fitcheck.run_function(
        "predict", demo_model_dir, 24, plan, log_dir=tmp_path, cold_timeout_s=10
    )
    assert not run.fits(baseline=None)
    assert run.oom_kills > 0 or not run.answered


def test_fit_needs_the_baseline_speed():
    def run(limit, p50, **extra):
        return fitcheck.Run(
            "predict",
            "litert",
            limit,
            True,
            cold_start_s=0.5,
            peak_mb=50,
            requests=3,
            latency_ms={"all": {"p50": p50}},
            **extra,
        )

    base = run(2048, 10.0)
    assert run(128, 12.0).fits(base)
    assert not run(128, 20.0).fits(base)  # 2× slower than unconstrained: thrashing, not a fit
    assert not run(128, 10.0, oom_kills=1).fits(base)
    assert not run(128, 10.0, errors=1).fits(base)
    assert not fitcheck.Run("predict", "litert", 128, True).fits(base)  # never answered


def test_cli_prints_the_smallest_tier_with_its_margin(demo_model_dir, tmp_path, capsys):
    report_file = tmp_path / "fit.json"
    args = ["--functions", "predict", "--warm", "4", "--json", str(report_file)]
    assert fitcheck.main([str(demo_model_dir), *args]) == 0
    printed = capsys.readouterr().out
    assert "predict: fits 128 MiB with a 20% margin" in printed
    report = json.loads(report_file.read_text())["predict"]
    # run at 80 % of the tier, and it stayed under that limit
    assert report["tier_mb"] == 128 and report["runs"][-1]["limit_mb"] == int(128 * 0.8)
    assert report["runs"][-1]["peak_mb"] <= 128 * 0.8 and report["runs"][-1]["oom_kills"] == 0
