"""The local cloud's smaller APIs: Service Usage, IAM, Cloud Run's IAM, and Cloud Storage
through fake-gcs-server with a thin shim (Cloud Scheduler: devstack.cloudscheduler; Dataflow:
devstack.clouddataflow; Firebase App Check: devstack.cloudappcheck).

fake-gcs-server keeps buckets and objects; it has no bucket IAM policies and drops some
bucket settings (lifecycle, CORS, uniform access, public access prevention, website). The shim
keeps those beside it and adds them to what fake-gcs-server answers, so `describe` shows what
deploy.sh set and a test can check it.
"""

from __future__ import annotations

import re

from devstack import cloudappcheck, clouddataflow, cloudscheduler
from devstack.localcloud import Cloud, CloudError, Request, Response, etag, operation

DEFAULT_APIS = (
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudscheduler.googleapis.com",
    "storage.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "dataflow.googleapis.com",
)
# Bucket fields fake-gcs-server does not keep: the shim does.
SHIMMED = ("lifecycle", "cors", "iamConfiguration", "website", "location")


def install(cloud: Cloud, disabled: tuple[str, ...] = ()) -> None:
    _token(cloud)
    _service_usage(cloud, disabled)
    _build(cloud)
    _iam(cloud)
    _run_iam(cloud)
    cloudscheduler.install(cloud)
    clouddataflow.install(cloud)
    cloudappcheck.install(cloud)
    _storage(cloud)


def _token(cloud: Cloud) -> None:
    """The token endpoint of the rehearsal's throwaway service-account key: what lets
    `gcloud auth activate-service-account` log in without Google."""

    @cloud.route("oauth2", "POST", r"/token")
    def token(request: Request, m: re.Match) -> Response:
        return Response(
            200,
            {"access_token": "local-rehearsal-token", "expires_in": 3600, "token_type": "Bearer"},
        )


# --- Service Usage -----------------------------------------------------------------------


def _service_usage(cloud: Cloud, disabled: tuple[str, ...]) -> None:
    def enabled(project: str) -> list[str]:
        if project not in cloud.kind("services"):
            cloud.put(
                "services", project, {"enabled": [a for a in DEFAULT_APIS if a not in disabled]}
            )
        return cloud.get("services", project)["enabled"]

    @cloud.route("serviceusage", "GET", r"/v1/projects/(?P<project>[^/]+)/services")
    def list_services(request: Request, m: re.Match) -> Response:
        services = [
            {
                "name": f"projects/{m['project']}/services/{api}",
                "config": {"name": api},
                "state": "ENABLED",
            }
            for api in enabled(m["project"])
        ]
        return Response(200, {"services": services})

    @cloud.route("serviceusage", "GET", r"/v1/projects/(?P<project>[^/]+)/services/(?P<api>[^/:]+)")
    def get_service(request: Request, m: re.Match) -> Response:
        state = "ENABLED" if m["api"] in enabled(m["project"]) else "DISABLED"
        return Response(
            200,
            {
                "name": f"projects/{m['project']}/services/{m['api']}",
                "config": {"name": m["api"]},
                "state": state,
            },
        )

    @cloud.route("serviceusage", "POST", r"/v1/projects/(?P<project>[^/]+)/services:batchEnable")
    def batch_enable(request: Request, m: re.Match) -> Response:
        apis = enabled(m["project"])
        apis.extend(a for a in request.json().get("serviceIds", []) if a not in apis)
        cloud.put("services", m["project"], {"enabled": apis})
        return Response(200, operation(cloud, f"operations/enable.{len(cloud.calls)}", {}))

    @cloud.route(
        "serviceusage", "POST", r"/v1/projects/(?P<project>[^/]+)/services/(?P<api>[^/:]+):enable"
    )
    def enable(request: Request, m: re.Match) -> Response:
        apis = enabled(m["project"])
        if m["api"] not in apis:
            apis.append(m["api"])
        cloud.put("services", m["project"], {"enabled": apis})
        return Response(200, operation(cloud, f"operations/enable.{len(cloud.calls)}", {}))

    @cloud.route("serviceusage", "GET", r"/v1/(?P<name>operations/[^/]+)")
    def get_operation(request: Request, m: re.Match) -> Response:
        return Response(200, cloud.get("operations", m["name"]))


def _build(cloud: Cloud) -> None:
    """What gcloud asks Cloud Build and Artifact Registry before a gen2 deploy."""

    @cloud.route(
        "cloudbuild",
        "GET",
        r"/v1/projects/(?P<project>[^/]+)/locations/[^/]+/defaultServiceAccount",
    )
    def default_account(request: Request, m: re.Match) -> Response:
        email = f"{m['project']}-compute@developer.gserviceaccount.com"
        return Response(
            200,
            {
                "name": f"projects/{m['project']}/defaultServiceAccount",
                "serviceAccountEmail": f"projects/{m['project']}/serviceAccounts/{email}",
            },
        )


# --- IAM ---------------------------------------------------------------------------------


def _policy_routes(cloud: Cloud, api: str, pattern: str, kind: str, exists: str | None) -> None:
    """getIamPolicy / setIamPolicy of one kind of resource, kept in `kind`."""

    def name(m: re.Match) -> str:
        return m["resource"]

    def get_policy(request: Request, m: re.Match) -> Response:
        if exists:
            _account(cloud, name(m)) if exists == "accounts" else cloud.get(exists, name(m))
        return Response(200, cloud.kind(kind).get(name(m), {"version": 1, "etag": "QUNBQg=="}))

    for method in ("GET", "POST"):  # Cloud Run v1 reads a policy with GET, the others POST
        cloud.route(api, method, pattern + ":getIamPolicy")(get_policy)

    @cloud.route(api, "POST", pattern + ":setIamPolicy")
    def set_policy(request: Request, m: re.Match) -> Response:
        if exists:
            _account(cloud, name(m)) if exists == "accounts" else cloud.get(exists, name(m))
        policy = {**request.json().get("policy", {}), "etag": etag(cloud)}
        return Response(200, cloud.put(kind, name(m), policy))


def _account(cloud: Cloud, resource: str) -> dict:
    email = resource.rsplit("/", 1)[-1]
    return cloud.get("service-accounts", email)


def _iam(cloud: Cloud) -> None:
    @cloud.route("iam", "GET", r"/v1/projects/[^/]+/serviceAccounts/(?P<email>[^/:]+)")
    def get_account(request: Request, m: re.Match) -> Response:
        return Response(200, cloud.get("service-accounts", m["email"]))

    @cloud.route("iam", "POST", r"/v1/projects/(?P<project>[^/]+)/serviceAccounts")
    def create_account(request: Request, m: re.Match) -> Response:
        body = request.json()
        email = f"{body['accountId']}@{m['project']}.iam.gserviceaccount.com"
        if email in cloud.kind("service-accounts"):
            raise CloudError(409, f"Service account {body['accountId']} already exists")
        account = {
            "name": f"projects/{m['project']}/serviceAccounts/{email}",
            "projectId": m["project"],
            "uniqueId": str(100000000000000000000 + len(cloud.kind("service-accounts"))),
            "email": email,
            "displayName": body.get("serviceAccount", {}).get("displayName", ""),
        }
        return Response(200, cloud.put("service-accounts", email, account))

    _policy_routes(
        cloud,
        "iam",
        r"/v1/(?P<resource>projects/[^/]+/serviceAccounts/[^/:]+)",
        "service-account-policies",
        "accounts",
    )
    _policy_routes(
        cloud,
        "cloudresourcemanager",
        r"/v[13]/(?P<resource>projects/[^/:]+)",
        "project-policies",
        None,
    )

    @cloud.route("cloudresourcemanager", "GET", r"/v[13]/projects/(?P<project>[^/:]+)")
    def get_project(request: Request, m: re.Match) -> Response:
        number = str(abs(hash(m["project"])) % 10**12)
        return Response(
            200,
            {
                "projectId": m["project"],
                "projectNumber": number,
                "name": f"projects/{number}",
                "lifecycleState": "ACTIVE",
                "state": "ACTIVE",
            },
        )


def _run_iam(cloud: Cloud) -> None:
    """The invoker bindings of gen2 functions live on their Cloud Run services."""
    _policy_routes(
        cloud,
        "run",
        r"/v[12]/(?P<resource>projects/[^/]+/locations/[^/]+/services/[^/:]+)",
        "run-policies",
        None,
    )

    @cloud.route(
        "run", "GET", r"/v[12]/projects/(?P<p>[^/]+)/locations/(?P<r>[^/]+)/services/(?P<s>[^/:]+)"
    )
    def get_service(request: Request, m: re.Match) -> Response:
        name = f"projects/{m['p']}/locations/{m['r']}/functions/{m['s']}"
        function = cloud.get("functions", name)
        return Response(
            200,
            {
                "name": f"projects/{m['p']}/locations/{m['r']}/services/{m['s']}",
                "uri": function.get("serviceConfig", {}).get("uri", ""),
            },
        )


# --- Cloud Storage (fake-gcs-server + shim) ----------------------------------------------


def _storage(cloud: Cloud) -> None:
    bucket = r"/v1/b/(?P<bucket>[^/]+)"

    @cloud.route("storage", "GET", bucket + r"/iam")
    def get_policy(request: Request, m: re.Match) -> Response:
        _proxy(cloud, "GET", f"/storage/v1/b/{m['bucket']}", b"", {})  # 404 when absent
        default = {"kind": "storage#policy", "version": 1, "etag": "CAE=", "bindings": []}
        return Response(200, cloud.kind("bucket-policies").get(m["bucket"], default))

    @cloud.route("storage", "PUT", bucket + r"/iam")
    def set_policy(request: Request, m: re.Match) -> Response:
        policy = {**request.json(), "etag": etag(cloud)}
        return Response(200, cloud.put("bucket-policies", m["bucket"], policy))

    @cloud.route("storage", "POST", r"/v1/b")
    def create_bucket(request: Request, m: re.Match) -> Response:
        body = request.json()
        answer = _proxy(cloud, "POST", "/storage/v1/b", request.body, request.query)
        if answer.status < 300:
            _keep(cloud, body["name"], body)
        return _shimmed(cloud, answer, body.get("name"))

    @cloud.route("storage", "PATCH", bucket)
    def patch_bucket(request: Request, m: re.Match) -> Response:
        body = request.json()
        answer = _proxy(cloud, "PATCH", f"/storage/v1/b/{m['bucket']}", request.body, request.query)
        if answer.status == 404:
            return answer
        _keep(cloud, m["bucket"], body)
        got = _proxy(cloud, "GET", f"/storage/v1/b/{m['bucket']}", b"", {})
        return _shimmed(cloud, got, m["bucket"])

    @cloud.route("storage", "GET", bucket)
    def get_bucket(request: Request, m: re.Match) -> Response:
        answer = _proxy(cloud, "GET", f"/storage/v1/b/{m['bucket']}", b"", request.query)
        return _shimmed(cloud, answer, m["bucket"])

    def passthrough(request: Request, m: re.Match) -> Response:
        base = "/upload" if m.re.pattern.startswith("(?P<upload>") else "/storage"
        return _proxy(
            cloud, request.method, base + m["rest"], request.body, request.query, request.headers
        )

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        cloud.route("storage", method, r"(?P<rest>/.*)")(passthrough)
    for method in ("POST", "PUT"):  # media uploads: /upload/storage/v1/b/B/o
        cloud.route("upload", method, r"(?P<upload>)(?P<rest>/storage/.*)")(passthrough)


def _keep(cloud: Cloud, name: str, body: dict) -> None:
    kept = cloud.kind("buckets").get(name, {})
    kept.update({k: v for k, v in body.items() if k in SHIMMED})
    cloud.put("buckets", name, kept)


def _shimmed(cloud: Cloud, answer: Response, name: str | None) -> Response:
    if answer.status >= 300 or not isinstance(answer.body, dict) or not name:
        return answer
    answer.body = {**answer.body, **cloud.kind("buckets").get(name, {})}
    return answer


def _proxy(
    cloud: Cloud, method: str, path: str, body: bytes, query: dict, headers: dict | None = None
) -> Response:
    import json
    import urllib.parse

    url = cloud.storage_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    sent = {
        k: v
        for k, v in (headers or {}).items()
        if k in ("content-type", "x-upload-content-type", "content-range")
    }
    if body and "content-type" not in sent:
        sent["content-type"] = "application/json"
    request = urllib.request.Request(url, data=body or None, method=method, headers=sent)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            status, data, kind = (
                answer.status,
                answer.read(),
                answer.headers.get("Content-Type", ""),
            )
    except urllib.error.HTTPError as exc:
        status, data, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    if "json" in kind and data:
        try:
            return Response(status, json.loads(data))
        except ValueError:
            pass
    return Response(status, data, {"Content-Type": kind} if kind else {})
