"""Dataflow for the local cloud: enough of the v1b3 API for Beam's DataflowRunner to submit a
job (`--dataflow_endpoint` pointed here). The job is kept as submitted, with its steps, its
options and what it staged; it is not run (workers are Google's). A test reads it back to
check the graph, the staged files and the options are what a worker needs."""

from __future__ import annotations

import re
import time
import uuid

from devstack.localcloud import Cloud, CloudError, Request, Response

BASE = r"/v1b3/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/jobs"


def install(cloud: Cloud) -> None:
    @cloud.route("dataflow", "POST", BASE)
    def create(request: Request, m: re.Match) -> Response:
        job = request.json()
        if not job.get("name"):
            raise CloudError(400, "A job needs a name.")
        job_id = time.strftime("%Y-%m-%d_%H_%M_%S-") + uuid.uuid4().hex[:8]
        job.update(
            id=job_id,
            projectId=m["project"],
            location=m["region"],
            currentState="JOB_STATE_QUEUED",
            createTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        cloud.put("dataflow-jobs", job_id, job)
        return Response(200, job)

    @cloud.route("dataflow", "GET", BASE + r"/(?P<job>[^/:]+)")
    def get(request: Request, m: re.Match) -> Response:
        return Response(200, cloud.get("dataflow-jobs", m["job"]))

    @cloud.route("dataflow", "GET", BASE + r"/(?P<job>[^/:]+)/messages")
    def messages(request: Request, m: re.Match) -> Response:
        cloud.get("dataflow-jobs", m["job"])
        return Response(200, {"jobMessages": []})

    @cloud.route("dataflow", "GET", BASE)
    def jobs(request: Request, m: re.Match) -> Response:
        found = [j for j in cloud.kind("dataflow-jobs").values() if j["projectId"] == m["project"]]
        return Response(200, {"jobs": found})
