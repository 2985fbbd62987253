"""make run's warmup pings: on a cron schedule, each one logged, off when asked."""

from __future__ import annotations

import datetime as dt

import pytest

from devstack import warmups
from devstack.cloudscheduler import CloudError, due


def test_cron_schedules_as_scheduler_reads_them():
    at = dt.datetime(2026, 11, 28, 10, 35, tzinfo=dt.UTC)  # a Saturday
    assert due("*/5 * * * *", at) and not due("*/5 * * * *", at.replace(minute=36))
    assert due("35 10 * * 6", at) and not due("35 10 * * 1-5", at)
    assert due("0-40/35 * 28 11 *", at)
    with pytest.raises(CloudError, match="unix cron has 5"):
        due("*/5 * * *", at)


def test_pings_are_logged_when_due_and_can_be_off(stack):
    assert warmups.start({"predict": stack.predict_url}, "off") is False
    assert warmups.start({"predict": stack.predict_url}, "*/5 * * * *") is True
    assert "failed" in warmups.ping("nothing", "http://127.0.0.1:9")
    seen: list[str] = []
    urls = {"predict": stack.predict_url, "gradcam": stack.gradcam_url}
    at = dt.datetime(2026, 11, 28, 10, 35, tzinfo=dt.UTC)
    assert not warmups.fire_due(urls, "*/5 * * * *", at.replace(minute=36), seen.append)
    assert warmups.fire_due(urls, "*/5 * * * *", at, seen.append)
    assert [line.split(":")[0] for line in seen] == ["warmup predict", "warmup gradcam"]
    assert all(": 200 in " in line and "model loads 1" in line for line in seen)
