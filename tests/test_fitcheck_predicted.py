"""The fit check that predicts: one whole-core profile, every configuration predicted from it,
the recommended one and the next cheaper run for real; and the quota model it rests on."""

from __future__ import annotations

import json
import shutil

import pytest

from harness import cpugroup, memgroup
from model_store.fitting import cli as fit_cli
from model_store.fitting import predicted
from model_store.fitting.profile import Profile, Request, TierFit


def test_the_quota_model_matches_a_cfs_period_by_hand():
    # 0.5 s of CPU at a quarter vCPU: 25 ms per 100 ms period, done in the 20th period.
    (wall,) = predicted.throttled([(0.5, 0.0)], 0.25)
    assert wall == pytest.approx(1.925, abs=1e-6)
    # Work under the quota left in its period runs at full speed; over it, it waits.
    assert predicted.throttled([(0.01, 0.0)], 0.25) == [pytest.approx(0.01)]
    first, second = predicted.throttled([(0.02, 0.0), (0.02, 0.0)], 0.25)
    assert first == pytest.approx(0.02) and second == pytest.approx(0.08 + 0.015, abs=1e-6)
    # After a pause longer than a period, as the fit check sends them, each starts afresh.
    pair = predicted.throttled([(0.02, 0.0), (0.02, 0.0)], 0.25, gap_s=0.25)
    assert pair == [pytest.approx(0.02), pytest.approx(0.02)]
    # Time spent outside the group (the client, the network) passes as it did.
    assert predicted.throttled([(0.01, 0.05)], 0.25) == [pytest.approx(0.06)]


def test_options_follow_the_profile():
    profile = Profile(
        "predict",
        cold_start_s=0.6,
        startup_cpu_s=0.5,
        requests=[Request("small", 0.025, 0.027)] * 8 + [Request("large", 0.06, 0.065)] * 4,
        tiers=[TierFit(256, 204, True), TierFit(128, 102, False, "thrashing")],
    )
    options = {(o.memory_mb, o.cpu): o for o in predicted.predicted_options(profile, (128, 256))}
    assert not options[(128, 0.083)].fits and options[(256, 0.167)].fits
    assert options[(256, 1.0)].cold_start_s == pytest.approx(0.6, abs=0.01)
    assert options[(256, 0.167)].cold_start_s > 2.5  # 0.5 s of CPU at a sixth of a vCPU
    # 25 ms of CPU is more than a sixth of a vCPU's 16.7 ms quota: it waits a period
    assert options[(256, 0.167)].p50_ms > options[(256, 1.0)].p50_ms + 10
    assert all(o.source == "predicted" for o in options.values())


def test_a_squeezed_tier_starts_as_its_fresh_server_did():
    squeezed = TierFit(128, 102, True, slowdown=1.1, cold_start_s=1.5, startup_cpu_s=0.8)
    profile = Profile(
        "predict",
        cold_start_s=0.6,
        startup_cpu_s=0.5,
        requests=[Request("small", 0.025, 0.027)],
        tiers=[TierFit(256, 204, True, "the peak is below the limit"), squeezed],
    )
    options = {(o.memory_mb, o.cpu): o for o in predicted.predicted_options(profile, (128, 256))}
    assert options[(256, 1.0)].cold_start_s == pytest.approx(0.6, abs=0.01)
    assert options[(128, 1.0)].cold_start_s == pytest.approx(1.5, abs=0.01)  # 0.8 CPU + 0.7 I/O
    # at a third of a vCPU: 0.8 s of CPU takes 2.4 s, the reading passes as it did
    assert options[(128, 0.333)].cold_start_s == pytest.approx(0.7 + 0.8 / 0.333, abs=0.12)


@pytest.mark.skipif(
    not (memgroup.available() and cpugroup.available()), reason="needs cgroup v1 controllers"
)
def test_the_predicted_check_recommends_verifies_and_records(demo_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_model_dir, model)
    out = tmp_path / "fit.json"
    argv = [str(model), "--functions", "predict", "--warm", "9", "--json", str(out), "--record"]
    assert fit_cli.main(argv) == 0
    report = json.loads(out.read_text())["predict"]
    profile = report["profile"]
    assert profile["cold_start_s"] > profile["startup_cpu_s"] > 0.1
    assert len(profile["requests"]) == 9 and "first answer" in profile["stages"]
    assert [t["tier_mb"] for t in profile["tiers"]] == [1024, 512, 256, 128]
    for tier in profile["tiers"]:  # a squeezed tier that held was started fresh under it
        if tier["fits"] and tier["slowdown"] is not None:
            assert tier["cold_start_s"] > tier["startup_cpu_s"] > 0.1
    verified = [o for o in report["options"] if o["source"] == "verified"]
    assert 1 <= len(report["runs"]) == len(verified) <= predicted.MAX_VERIFY_RUNS
    best = report["recommended"]
    assert best["source"] == "verified" and best["fits"] and best["cold_start_s"] <= 3
    # every configuration cheaper than the recommendation that was run missed a target
    for option in verified:
        if option["cost_per_1000"] and option["cost_per_1000"] < best["cost_per_1000"]:
            assert not (option["fits"] and option["cold_start_s"] <= 3 and option["p50_ms"] <= 300)
    recorded = json.loads((model / "manifest.json").read_text())["fitcheck"]
    assert recorded["mode"] == "predicted" and recorded["warm_requests"] == 9
    assert recorded["predict"]["recommended"]["memory_mb"] == best["memory_mb"]
