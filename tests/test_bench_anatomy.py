"""bench/anatomy.py on the demo model: real servers, a real cgroup, the real emulator."""

import pytest

from bench import anatomy
from harness import memgroup


@pytest.mark.skipif(not memgroup.available(), reason="needs the cgroup v1 controller")
def test_memory_by_stage(demo_model_dir, stack, tmp_path):
    stages = anatomy.memory("gradcam", str(demo_model_dir), stack.storage_url, tmp_path)
    names = [s["stage"] for s in stages]
    assert names[0] == "server up, no model" and names[-1] == "after 30 requests"
    assert all(len(s["process_anon_mb"]) == 2 for s in stages)  # gunicorn master + worker
    # loading the model and answering can only add anonymous memory to the group
    assert stages[0]["anon_mb"] < stages[1]["anon_mb"] <= stages[-1]["anon_mb"] + 1
    # cgroup v1 charges a cached page to the group that read it first: with another test's
    # server mapping the same libraries and model (make test runs two workers), this group
    # may be charged none of them, so only the accounting's own invariant is asserted.
    assert stages[-1]["cache_mb"] >= stages[-1]["mapped_mb"] >= 0


def test_timing_marks_per_engine(demo_model_dir, stack, tmp_path):
    rows = anatomy.timing(str(demo_model_dir), stack.storage_url, tmp_path, count=3)
    assert [(r["function"], r["engine"]) for r in rows] == [
        ("predict", "litert"),
        ("predict", "keras"),
        ("gradcam", "litert"),
        ("gradcam", "keras"),
    ]
    for row in rows:
        assert 0 < row["inference_ms"] < row["total_ms"] < row["round_trip_ms"]
    assert "store_ms" in rows[2] and "render_ms" in rows[2]
