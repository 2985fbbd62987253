"""A local Google Cloud for rehearsing deploy.sh with the real gcloud CLI.

    python -m devstack.localcloud [--port 8090] [--state DIR] [--clock 1]

gcloud sends its real REST calls here when each API's endpoint is overridden
(`CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>=http://127.0.0.1:PORT/<api>/`, see `environment`) and
credentials are off (`CLOUDSDK_AUTH_DISABLE_CREDENTIALS=true`). What it serves:

- Cloud Functions v2 (devstack.cloudfunctions): functions get / create / patch, runtimes,
  generateUploadUrl and the upload, operations; "deploying" builds the uploaded source in a
  fresh virtualenv and runs it under functions-framework in memory and cpu cgroups.
- Cloud Run's IAM (the invoker bindings of gen2 functions), IAM service accounts and their
  policies, Resource Manager project policies, Service Usage (APIs listed and enabled),
  Cloud Scheduler jobs, kept and fired on their cron against their target.
- Cloud Storage: proxied to fake-gcs-server, with a thin shim for what it lacks (bucket IAM
  policies, and the settings it drops).
- Firebase App Check (devstack.cloudappcheck): the key set, debug tokens and their exchange,
  at URL/firebaseappcheck (deploy.sh reads it from `DERMCAM_APPCHECK_ENDPOINT`; not gcloud's).

Every call is recorded, and every resource's state is kept in `STATE/cloud.json`, so a test
can read what the rehearsal did. `--clock N` runs the scheduler's clock N times faster.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

APIS = (
    "cloudfunctions",
    "run",
    "iam",
    "cloudresourcemanager",
    "serviceusage",
    "cloudscheduler",
    "storage",
    "cloudbuild",
    "artifactregistry",
    "dataflow",
)


class CloudError(Exception):
    """An API error answered the way Google's APIs answer it."""

    STATUS = {
        400: "INVALID_ARGUMENT",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ALREADY_EXISTS",
        412: "FAILED_PRECONDITION",
    }

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "status": self.STATUS.get(self.code, "UNKNOWN"),
            }
        }


@dataclass
class Request:
    method: str
    path: str  # without the API prefix and the query
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # a dict (JSON) or bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, re.Match], Response]


class Cloud:
    """Resources by kind and name, the call log, and the routes of every API."""

    def __init__(self, state_dir: Path, storage_url: str, clock: float = 1.0) -> None:
        self.state_dir = state_dir
        self.storage_url = storage_url  # fake-gcs-server
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.lock = threading.RLock()
        self.resources: dict[str, dict[str, dict]] = {}
        self.calls: list[dict] = []
        self.routes: list[tuple[str, str, re.Pattern, Handler]] = []
        self.url = ""
        saved = self.state_dir / "cloud.json"
        if saved.exists():
            data = json.loads(saved.read_text())
            self.resources, self.calls = data["resources"], data["calls"]

    def route(self, api: str, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append((api, method, re.compile(pattern + r"$"), handler))
            return handler

        return register

    def kind(self, kind: str) -> dict[str, dict]:
        return self.resources.setdefault(kind, {})

    def get(self, kind: str, name: str) -> dict:
        found = self.kind(kind).get(name)
        if found is None:
            raise CloudError(404, f"{kind} {name} not found")
        return found

    def put(self, kind: str, name: str, value: dict) -> dict:
        with self.lock:
            self.kind(kind)[name] = value
            self.save()
        return value

    def save(self) -> None:
        with self.lock:
            path = self.state_dir / "cloud.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {"resources": self.resources, "calls": self.calls}, indent=1, default=str
                )
            )
            tmp.replace(path)

    def dispatch(self, api: str, request: Request) -> Response:
        record = {
            "time": time.time(),
            "api": api,
            "method": request.method,
            "path": request.path,
            "query": request.query,
        }
        if request.body and request.headers.get("content-type", "").startswith("application/json"):
            try:
                record["body"] = request.json()
            except ValueError:
                pass
        try:
            for route_api, method, pattern, handler in self.routes:
                match = pattern.match(request.path)
                if route_api == api and method == request.method and match:
                    response = handler(request, match)
                    break
            else:
                raise CloudError(
                    404, f"the local cloud does not serve {request.method} {api}{request.path}"
                )
        except CloudError as exc:
            response = Response(exc.code, exc.body())
        record["status"] = response.status
        with self.lock:
            self.calls.append(record)
            self.save()
        return response


def etag(cloud: Cloud) -> str:
    """A fresh etag: base64, as gcloud decodes it."""
    import base64

    return base64.b64encode(f"etag-{len(cloud.calls)}".encode()).decode()


def operation(
    cloud: Cloud,
    name: str,
    response: dict | None = None,
    done: bool = True,
    error: dict | None = None,
) -> dict:
    """A long-running operation, kept so gcloud can poll it."""
    op = {
        "name": name,
        "done": done,
        "metadata": {"@type": "type.googleapis.com/google.cloud.functions.v2.OperationMetadata"},
    }
    if done and error:
        op["error"] = error
    elif done and response is not None:
        op["response"] = response
    cloud.put("operations", name, op)
    return op


def make_handler(cloud: Cloud) -> type[BaseHTTPRequestHandler]:
    class HTTPHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            parts = parsed.path.lstrip("/").split("/", 1)
            api, path = parts[0], "/" + (parts[1] if len(parts) > 1 else "")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(
                self.command,
                urllib.parse.unquote(path),
                dict(urllib.parse.parse_qsl(parsed.query)),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            response = cloud.dispatch(api, request)
            payload = response.body
            if isinstance(payload, dict | list):
                payload = json.dumps(payload).encode()
                response.headers.setdefault("Content-Type", "application/json")
            payload = payload or b""
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return HTTPHandler


def environment(url: str, config_dir: Path) -> dict[str, str]:
    """What makes the real gcloud talk to this cloud: endpoint overrides, credentials off,
    no prompts, a configuration folder of its own."""
    env = {
        "CLOUDSDK_CONFIG": str(config_dir),
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    }
    for api in APIS:
        suffix = "storage/v1/" if api == "storage" else f"{api}/"
        env[f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}"] = f"{url}/{suffix}"
    return env


def serve(cloud: Cloud, port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(cloud))
    server.daemon_threads = True
    cloud.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True, name="localcloud").start()
    return server


def main(argv: list[str] | None = None) -> int:
    from devstack import cloudapis, cloudfunctions

    parser = argparse.ArgumentParser(
        prog="python -m devstack.localcloud",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--state", default=".run/localcloud")
    parser.add_argument("--clock", type=float, default=1.0, help="scheduler clock speed-up")
    parser.add_argument("--storage", required=True, help="fake-gcs-server URL")
    args = parser.parse_args(argv)
    cloud = Cloud(Path(args.state), args.storage, args.clock)
    cloudapis.install(cloud)
    cloudfunctions.install(cloud)
    server = serve(cloud, args.port)
    print(f"local cloud at {cloud.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        cloudfunctions.stop_all(cloud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
