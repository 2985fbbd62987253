"""bench/soak.py's arithmetic: the slope a soak reports per 1,000 requests (no servers here;
`make soak` runs the real ones)."""

import pytest

from bench import soak


def samples(values):
    return [(100 * (i + 1), v) for i, v in enumerate(values)]


def test_a_leak_keeps_its_slope_to_the_end():
    leaking = samples([100 + 0.2 * i for i in range(50)])  # 0.2 MiB per 100 requests
    assert soak.slope_per_1000(leaking) == pytest.approx(2.0)
    assert soak.slope_per_1000(leaking, skip=0.5) == pytest.approx(2.0)


def test_early_steps_then_flat_show_in_the_first_half_only():
    settling = samples([150] * 5 + [158] * 15 + [161] * 30)  # steps at 500 and 2,000
    assert soak.slope_per_1000(settling) > 1
    assert soak.slope_per_1000(settling, skip=0.5) == pytest.approx(0.0)


def test_too_few_samples_give_no_slope():
    assert soak.slope_per_1000(samples([1, 2])) is None
