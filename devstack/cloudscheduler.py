"""Cloud Scheduler for the local cloud: jobs kept as gcloud creates and updates them, and
fired on their unix-cron schedule against their HTTP target (with an OIDC token of the local
cloud's when the job asks for one), on a clock `cloud.clock` times real time."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import urllib.error
import urllib.request

from devstack import invoker
from devstack.localcloud import Cloud, CloudError, Request, Response


def install(cloud: Cloud) -> None:
    _scheduler(cloud)


def _scheduler(cloud: Cloud) -> None:
    base = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/jobs"

    def name(m: re.Match) -> str:
        return f"projects/{m['project']}/locations/{m['region']}/jobs/{m['job']}"

    @cloud.route("cloudscheduler", "GET", base + r"/(?P<job>[^/:]+)")
    def get_job(request: Request, m: re.Match) -> Response:
        return Response(200, cloud.get("jobs", name(m)))

    @cloud.route("cloudscheduler", "POST", base)
    def create_job(request: Request, m: re.Match) -> Response:
        job = request.json()
        if job["name"] in cloud.kind("jobs"):
            raise CloudError(409, f"Job {job['name']} already exists")
        cron_fields(job["schedule"])  # a bad schedule is a 400, as the real API says
        return Response(200, cloud.put("jobs", job["name"], {**job, "state": "ENABLED"}))

    @cloud.route("cloudscheduler", "PATCH", base + r"/(?P<job>[^/:]+)")
    def patch_job(request: Request, m: re.Match) -> Response:
        current = cloud.get("jobs", name(m))
        update = request.json()
        fields = [f for f in request.query.get("updateMask", "").split(",") if f]
        merged = dict(current)
        for path in fields or list(update):
            top = path.split(".")[0]
            if top in update:
                merged[top] = update[top]
        cron_fields(merged["schedule"])
        return Response(200, cloud.put("jobs", name(m), merged))

    threading.Thread(target=_fire_jobs, args=(cloud,), daemon=True, name="scheduler").start()


def cron_fields(schedule: str) -> list[set[int]]:
    """The five fields of a unix cron schedule as sets (*, */n, a-b, a-b/n, lists)."""
    bounds = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
    parts = schedule.split()
    if len(parts) != 5:
        raise CloudError(400, f"Schedule has {len(parts)} fields; unix cron has 5: {schedule!r}")
    fields = []
    for text, (low, high) in zip(parts, bounds, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            spec, _, step = item.partition("/")
            start, end = (
                (low, high)
                if spec == "*"
                else (
                    tuple(int(x) for x in spec.split("-"))
                    if "-" in spec
                    else (int(spec), int(spec))
                )
            )
            if not low <= start <= end <= high:
                raise CloudError(400, f"Schedule field {item!r} is out of range {low}-{high}")
            values.update(range(start, end + 1, int(step) if step else 1))
        fields.append(values)
    return fields


def due(schedule: str, moment: dt.datetime) -> bool:
    minute, hour, day, month, weekday = cron_fields(schedule)
    return (
        moment.minute in minute
        and moment.hour in hour
        and moment.day in day
        and moment.month in month
        and (moment.weekday() + 1) % 7 in weekday
    )


def _fire_jobs(cloud: Cloud) -> None:
    """Each simulated minute, fire the jobs whose cron says so (`cloud.clock` × real time)."""
    started_real = time.monotonic()
    started_sim = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    last = started_sim
    while True:
        time.sleep(min(1.0, 30.0 / cloud.clock))
        now = started_sim + dt.timedelta(seconds=(time.monotonic() - started_real) * cloud.clock)
        while last + dt.timedelta(minutes=1) <= now:
            last += dt.timedelta(minutes=1)
            for job in list(cloud.kind("jobs").values()):
                if job.get("state") == "ENABLED" and due(job["schedule"], last):
                    threading.Thread(target=_fire, args=(cloud, job, last), daemon=True).start()


def _fire(cloud: Cloud, job: dict, moment: dt.datetime) -> None:
    target = job["httpTarget"]
    headers = dict(target.get("headers", {}))
    oidc = target.get("oidcToken")
    if oidc:  # the local cloud's stand-in for the token Google would mint for the job
        audience = oidc.get("audience") or target["uri"]
        headers["Authorization"] = "Bearer " + invoker.id_token(
            oidc.get("serviceAccountEmail", ""), audience
        )
    request = urllib.request.Request(  # noqa: S310 - loopback only
        target["uri"], method=target.get("httpMethod", "GET"), headers=headers
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        status = f"unreachable: {exc}"
    run = {
        "job": job["name"],
        "scheduled": moment.isoformat(),
        "fired_at": time.time(),
        "uri": target["uri"],
        "status": status,
        "seconds": round(time.monotonic() - started, 2),
        "oidc_audience": oidc.get("audience") if oidc else None,
        "oidc_service_account": oidc.get("serviceAccountEmail") if oidc else None,
    }
    with cloud.lock:
        runs = cloud.kind("job-runs").setdefault(job["name"], {"runs": []})
        runs["runs"].append(run)
        cloud.save()
