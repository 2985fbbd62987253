"""Cloud Functions v2 for the local cloud: the API gcloud calls to deploy, and the deploying.

A deployment unpacks the uploaded source zip into a fresh folder, builds a fresh virtualenv
from the source's own requirements.txt (failing, as Cloud Build would, when pip cannot
install it, and when it would install TensorFlow), and runs it under functions-framework with
the deployed environment variables, in a memory cgroup of the deployed size and a cpu group
with the deployed vCPU. The function's `serviceConfig.uri` is its local URL; an update
starts the new revision, then stops the old one.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devstack import invoker
from devstack.localcloud import Cloud, CloudError, Request, Response, etag, operation
from harness import servers

PREFIX = r"/v2/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)"
HEAVY = ("tensorflow", "tf-nightly", "tf-keras", "keras", "torch", "jax")  # and their -cpu etc.
RUNTIMES = ("python310", "python311", "python312", "python313")
# function name → its running revision: the server process and its cgroups
_processes: dict[str, servers.Server] = {}
# function name → its front door: one URL for the function's life, whatever revision serves
_frontends: dict[str, Frontend] = {}


class Frontend:
    """A function's stable URL, forwarding to its current revision (as Cloud Run's URL stays
    the same across revisions), to the callers its service's invoker policy lets in."""

    def __init__(self, policy: Callable[[], dict | None]) -> None:
        self.target = ""
        frontend = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if not invoker.allowed(policy(), frontend.url, self.headers):
                    self._refuse()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(  # noqa: S310 - loopback only
                    frontend.target + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310 - loopback
                        status, reply, data = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as exc:
                    status, reply, data = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for key, value in reply.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _refuse(self) -> None:
                data = b"Error: Forbidden. Your client does not have permission to get URL.\n"
                self.send_response(403)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def install(cloud: Cloud) -> None:
    @cloud.route("cloudfunctions", "GET", PREFIX + r"/functions/(?P<function>[^/:]+)")
    def get(request: Request, m: re.Match) -> Response:
        return Response(200, cloud.get("functions", _name(m)))

    @cloud.route("cloudfunctions", "GET", PREFIX + r"/functions")
    def list_functions(request: Request, m: re.Match) -> Response:
        prefix = f"projects/{m['project']}/locations/{m['region']}/functions/"
        found = [f for n, f in cloud.kind("functions").items() if n.startswith(prefix)]
        return Response(200, {"functions": found})

    @cloud.route("cloudfunctions", "GET", PREFIX + r"/runtimes")
    def runtimes(request: Request, m: re.Match) -> Response:
        return Response(
            200,
            {
                "runtimes": [
                    {
                        "name": r,
                        "displayName": f"Python {r[6]}.{r[7:]}",
                        "stage": "GA",
                        "environment": "GEN_2",
                    }
                    for r in RUNTIMES
                ]
            },
        )

    @cloud.route("cloudfunctions", "POST", PREFIX + r"/functions:generateUploadUrl")
    def upload_url(request: Request, m: re.Match) -> Response:
        token = uuid.uuid4().hex
        return Response(
            200,
            {
                "uploadUrl": f"{cloud.url}/cloudfunctions/uploads/{token}",
                "storageSource": {
                    "bucket": f"gcf-v2-uploads-{m['project']}",
                    "object": f"{token}.zip",
                },
            },
        )

    @cloud.route("cloudfunctions", "PUT", r"/uploads/(?P<token>[0-9a-f]+)")
    def upload(request: Request, m: re.Match) -> Response:
        folder = cloud.state_dir / "uploads"
        folder.mkdir(exist_ok=True)
        (folder / f"{m['token']}.zip").write_bytes(request.body)
        return Response(200, b"")

    @cloud.route("cloudfunctions", "POST", PREFIX + r"/functions")
    def create(request: Request, m: re.Match) -> Response:
        parent = f"projects/{m['project']}/locations/{m['region']}"
        name = f"{parent}/functions/{request.query['functionId']}"
        if name in cloud.kind("functions"):
            raise CloudError(409, f"Function {name} already exists")
        return Response(200, _deploy(cloud, name, request.json(), m))

    @cloud.route("cloudfunctions", "PATCH", PREFIX + r"/functions/(?P<function>[^/:]+)")
    def patch(request: Request, m: re.Match) -> Response:
        current = cloud.get("functions", _name(m))
        update = request.json()
        merged = {**current, **{k: v for k, v in update.items() if k != "name"}}
        return Response(200, _deploy(cloud, _name(m), merged, m))

    @cloud.route("cloudfunctions", "GET", PREFIX + r"/operations/(?P<op>[^/]+)")
    def get_operation(request: Request, m: re.Match) -> Response:
        name = f"projects/{m['project']}/locations/{m['region']}/operations/{m['op']}"
        return Response(200, cloud.get("operations", name))

    @cloud.route("cloudfunctions", "POST", PREFIX + r"/functions/(?P<function>[^/:]+):getIamPolicy")
    def get_policy(request: Request, m: re.Match) -> Response:
        cloud.get("functions", _name(m))
        return Response(200, cloud.kind("function-policies").get(_name(m), {"etag": "QUNBQg=="}))

    @cloud.route("cloudfunctions", "POST", PREFIX + r"/functions/(?P<function>[^/:]+):setIamPolicy")
    def set_policy(request: Request, m: re.Match) -> Response:
        cloud.get("functions", _name(m))
        policy = {**request.json().get("policy", {}), "etag": etag(cloud)}
        return Response(200, cloud.put("function-policies", _name(m), policy))


def _name(m: re.Match) -> str:
    return f"projects/{m['project']}/locations/{m['region']}/functions/{m['function']}"


def _deploy(cloud: Cloud, name: str, spec: dict, m: re.Match) -> dict:
    """Start building `spec` in the background; the operation gcloud polls."""
    op_name = f"projects/{m['project']}/locations/{m['region']}/operations/{uuid.uuid4().hex}"
    function = {
        **spec,
        "name": name,
        "state": "DEPLOYING",
        "environment": "GEN_2",
        "updateTime": _now(),
    }
    cloud.put("functions", name, function)
    op = operation(cloud, op_name, done=False)
    threading.Thread(target=_build_and_run, args=(cloud, name, op_name), daemon=True).start()
    return op


def _fail(cloud: Cloud, name: str, op_name: str, message: str) -> None:
    function = cloud.get("functions", name)
    cloud.put(
        "functions",
        name,
        {
            **function,
            "state": "FAILED",
            "stateMessages": [{"severity": "ERROR", "type": "BuildFailed", "message": message}],
        },
    )
    operation(cloud, op_name, error={"code": 3, "message": f"Build failed: {message}"})


def _build_and_run(cloud: Cloud, name: str, op_name: str) -> None:
    function = cloud.get("functions", name)
    short = name.rsplit("/", 1)[-1]
    # Numbered per function, as Cloud Run numbers a service's revisions (functions build side
    # by side; one function builds one revision at a time).
    built = sum(r["function"] == name for r in cloud.kind("revisions").values())
    revision = f"{short}-{built + 1:05d}"
    home = cloud.state_dir / "functions" / revision
    try:
        source = function["buildConfig"]["source"]["storageSource"]["object"]
        src = home / "source"
        with zipfile.ZipFile(cloud.state_dir / "uploads" / source) as archive:
            archive.extractall(src)
        requirements = src / "requirements.txt"
        heavy = _heavy(requirements)
        if heavy:
            raise BuildError(
                f"requirements.txt would install {', '.join(heavy)}: a function "
                "never carries TensorFlow (build refused)"
            )
        venv = home / "venv"
        # No pip of its own (ensurepip is seconds a build): this pip installs into it.
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the virtualenv")
        if requirements.exists():
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(venv / "bin" / "python"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    str(requirements),
                ],
                "pip install -r requirements.txt",
            )
        url, server = _start(cloud, function, src, venv, home)
    except BuildError as exc:
        _fail(cloud, name, op_name, str(exc))
        return
    old = _processes.get(name)
    _processes[name] = server
    project_region = name.rsplit("/functions/", 1)[0]
    service_name = f"{project_region}/services/{short}"  # gen2: the Cloud Run service
    if name not in _frontends:
        _frontends[name] = Frontend(lambda: cloud.kind("run-policies").get(service_name))
    frontend = _frontends[name]
    frontend.target = url  # the new revision takes the traffic, then the old one stops
    if old is not None:
        old.stop()
    cloud.put(
        "revisions",
        revision,
        {
            "function": name,
            "pid": server.proc.pid,
            "url": url,
            "created": _now(),
            "venv": str(venv),
        },
    )
    url = frontend.url
    service = {
        **function.get("serviceConfig", {}),
        "uri": url,
        "revision": revision,
        "service": service_name,
    }
    active = {
        **cloud.get("functions", name),
        "state": "ACTIVE",
        "serviceConfig": service,
        "url": url,
        "updateTime": _now(),
    }
    active.pop("stateMessages", None)
    cloud.put("functions", name, active)
    operation(
        cloud,
        op_name,
        response={**active, "@type": "type.googleapis.com/google.cloud.functions.v2.Function"},
    )


class BuildError(RuntimeError):
    pass


def _heavy(requirements: Path) -> list[str]:
    if not requirements.exists():
        return []
    found = []
    for line in requirements.read_text().splitlines():
        package = line.split("#", 1)[0].strip().lower().replace("_", "-")
        base = package.split("==")[0].split(">")[0].split("<")[0].split("[")[0].strip()
        if base and any(base == h or base.startswith(f"{h}-") for h in HEAVY):
            found.append(base)
    return found


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise BuildError(f"{what} failed: {tail[:400]}")


def _memory_mb(value: str) -> int:
    units = {"Mi": 1, "Gi": 1024, "M": 1, "G": 1000}
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * factor)
    return int(int(value) / 1024 / 1024)


def _start(
    cloud: Cloud, function: dict, src: Path, venv: Path, home: Path
) -> tuple[str, servers.Server]:
    service = function.get("serviceConfig", {})
    build = function.get("buildConfig", {})
    port = servers.free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "PORT": str(port),
        "K_SERVICE": function["name"].rsplit("/", 1)[-1],
        "FUNCTION_TARGET": build.get("entryPoint", ""),
        "PYTHONUNBUFFERED": "1",
        # The platform's storage: what the metadata server and GCS are to a real function.
        "STORAGE_EMULATOR_HOST": cloud.storage_url,
        **build.get("environmentVariables", {}),
        **service.get("environmentVariables", {}),
    }
    command = [
        str(venv / "bin" / "functions-framework"),
        "--target",
        build.get("entryPoint", ""),
        "--host",
        servers.HOST,
        "--port",
        str(port),
    ]
    cpu = service.get("availableCpu")
    with open(home / "function.log", "ab") as log:
        server = servers.start(
            command,
            f"http://{servers.HOST}:{port}",
            env=env,
            log=log,
            cwd=src,
            memory_mb=_memory_mb(service.get("availableMemory", "256Mi")),
            cpu_share=float(cpu) if cpu else None,
        )
    try:
        server.wait_up(120)
    except RuntimeError as exc:
        server.stop()
        tail = (home / "function.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise BuildError(f"the function did not start: {exc}; {' | '.join(tail)}") from exc
    return server.url, server


def stop_all(cloud: Cloud) -> None:
    for server in list(_processes.values()):
        server.stop()
    _processes.clear()
    for frontend in _frontends.values():
        frontend.server.shutdown()
    _frontends.clear()
