"""Where a cold start's CPU goes, layer by layer, for today's code and an earlier commit.

    python -m bench.anatomy startup [--baseline b15beb7] [--runs 5] [--share 0.167]

Each probe is a real functions-framework server started in a cpuacct group (page cache
dropped first) and timed to its first answer; `cpuacct.usage` then says how much CPU the
start took, which, unlike seconds, does not drift with the machine's load or the share. The
layers: functions-framework serving a hello-world function; the same with NumPy imported;
the same with NumPy, Pillow and LiteRT imported (every third-party module a first answer
needs, so the rest is dermcam's own code, the model and the request); the real function
answering a GET before any model is loaded (all its module-level imports); its first answer
to a request as the page sends it (gradcam: no class), and with a class.
The first answers are also timed at a fractional vCPU share.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import requests

from harness import storage
from model_store.fitting import load

ROOT = Path(__file__).resolve().parents[1]
HELLO = """import os

import functions_framework

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as dermcam does before NumPy loads
{extra}

@functions_framework.http
def {name}(request):
    return "ok"
"""


def checkout(commit: str, into: Path) -> Path:
    """The serving code and demo model as they were at `commit` (git archive)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", commit, "shared", "functions", "model_store/models/demo"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _hello(tmp: Path, function: str, extra: str) -> Path:
    folder = tmp / f"hello-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "main.py").write_text(HELLO.format(extra=extra, name=function))
    return folder / "main.py"


def probe(
    code: Path,
    function: str,
    source: Path,
    request: str,
    storage_url: str,
    share: float | None = None,
) -> tuple[float, float]:
    """(seconds, CPU seconds) from spawn to the first answer of `request` (get, first, class)."""
    server = load.start_server(
        function,
        code / "model_store/models/demo/1",
        Path(tempfile.mkdtemp()) / "probe.log",
        storage_url=storage_url,
        # the checkout's own package, before the venv's own path to the repository
        env={"PYTHONPATH": str(code / "shared")},
        source=source,
        cpu_share=share,
        count_cpu=True,
    )
    upload = load.request_plan(1)[0]
    session = requests.Session()
    try:
        while True:
            if not server.alive():
                raise RuntimeError(f"{source} exited with {server.proc.returncode}")
            try:
                if request == "get":
                    answer = session.get(server.url, timeout=60)
                else:
                    target = 3 if request == "class" else None
                    answer = load.post_upload(session, server.url, upload, function, target)
            except requests.ConnectionError:
                time.sleep(0.005)
                continue
            if answer.status_code < 500:
                break
        return time.perf_counter() - server.started, server.cpu_s()
    finally:
        server.stop()


def layers(code: Path, function: str, tmp: Path) -> list[tuple[str, Path, str]]:
    real = code / "functions" / function / "main.py"
    found = [
        ("functions-framework, hello world", _hello(tmp, function, ""), "get"),
        ("+ NumPy imported", _hello(tmp, function, "import numpy"), "get"),
        # Every third-party module the first answer needs: what is left is dermcam's own.
        (
            "+ NumPy, Pillow and LiteRT imported",
            _hello(tmp, function, "import numpy, PIL.Image, ai_edge_litert.interpreter"),
            "get",
        ),
        ("the function's imports (a GET, no model)", real, "get"),
        ("first answer as the page asks (gradcam: no class)", real, "first"),
    ]
    if function == "gradcam":
        found.append(("first answer naming a class", real, "class"))
    return found


def measure(baseline: str, runs: int, share: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    codes = {"today": ROOT, baseline: checkout(baseline, tmp / baseline)}
    results: dict = {"runs": runs, "share": share, "rows": []}
    with storage.storage_emulator(tmp) as storage_url:
        for function in ("predict", "gradcam"):
            for version, code in codes.items():
                for name, source, request in layers(code, function, tmp):
                    if version != "today" and source.parent.name.startswith("hello-"):
                        continue  # the framework layers do not change with the code
                    cpu = [
                        probe(code, function, source, request, storage_url)[1] for _ in range(runs)
                    ]
                    row = {
                        "function": function,
                        "code": version,
                        "layer": name,
                        "startup_cpu_s": round(statistics.median(cpu), 3),
                    }
                    if request != "get":
                        timed = [
                            probe(code, function, source, request, storage_url, share)[0]
                            for _ in range(max(1, runs // 2))
                        ]
                        whole = [probe(code, function, source, request, storage_url, 1.0)[0]]
                        row["cold_start_s"] = round(statistics.median(timed), 2)
                        row["cold_start_whole_core_s"] = round(whole[0], 2)
                    results["rows"].append(row)
                    print(row, flush=True)
    return results


def report(results: dict, baseline: str) -> str:
    lines = [
        f"Startup CPU (cpuacct, median of {results['runs']}), cold start at "
        f"{results['share']:g} vCPU and on a whole core:",
        "",
        "| function | code | layer | startup CPU (s) | cold start (s) | whole core (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['function']} | {r['code']} | {r['layer']} | {r['startup_cpu_s']:.3f} "
            f"| {r.get('cold_start_s', '–')} | {r.get('cold_start_whole_core_s', '–')} |"
        )
    for function in ("predict", "gradcam"):
        for layer in ("first answer as the page asks", "first answer naming a class"):
            today = _find(results, function, "today", layer)
            before = _find(results, function, baseline, layer)
            if today and before:
                lines.append(
                    f"\n{function}, {layer}: today ÷ {baseline} = "
                    f"{today['startup_cpu_s'] / before['startup_cpu_s']:.2f}× startup CPU"
                )
    return "\n".join(lines)


def _find(results: dict, function: str, code: str, layer: str) -> dict | None:
    return next(
        (
            r
            for r in results["rows"]
            if r["function"] == function and r["code"] == code and r["layer"].startswith(layer)
        ),
        None,
    )
