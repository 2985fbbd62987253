"""Whole archives on Apache Beam (model_store.archive, in .venv-beam): the direct runner makes
the rows and the report a single process makes, bad images go to dead letters with their
reason, a run whose workers are killed finishes, and a Dataflow job is staged as a worker
needs it (submitted to the local cloud's Dataflow, which keeps it as sent)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from devstack import cloudapis, localcloud
from harness import servers, storage
from model_store.evaluation.audit.cli import main as audit
from model_store.evaluation.evaluate import main as evaluate
from model_store.evaluation.folder import gcs_location, read_bytes
from model_store.evaluation.runners import beam_python

TIMING = {"seconds"}  # per-row wall times: the only thing allowed to differ


def beam(tool: str, argv: list[str], **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", f"model_store.{tool}", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **popen)


def rows_of(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((out / "rows").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            found[row["id"]] = row
    return found


def single_rows(out: Path) -> dict[str, dict]:
    rows = (json.loads(line) for line in (out / "results.jsonl").read_text().splitlines())
    return {row["id"]: row for row in rows}


def without_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def summary_of(out: Path) -> dict:
    summary = json.loads((out / "report.json").read_text())["summary"]
    for timing in ("seconds_per_image", "speed"):  # wall times
        summary.pop(timing, None)
    return summary


@pytest.fixture(scope="module")
def archive(tmp_path_factory, faulty_folder):
    assert beam_python().exists(), "the Beam environment is missing: make beam"
    return faulty_folder(tmp_path_factory.mktemp("archive"), seed=77, count=10)


def test_the_direct_runner_makes_what_a_single_process_makes(archive, demo_model_dir, tmp_path):
    argv = [str(demo_model_dir), "--images", str(archive), "--labels", str(archive / "labels.csv")]
    argv += ["--masks", str(archive), "--methods", "gradcam,gradcam++", "--sanity"]
    assert evaluate([*argv, "--out", str(tmp_path / "single")]) == 0
    done = beam("evaluate", [*argv, "--out", str(tmp_path / "beam"), "--runner", "direct"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "direct runner: 12 images" in done.stdout

    single, rows = single_rows(tmp_path / "single"), rows_of(tmp_path / "beam")
    assert sorted(rows) == sorted(single) and len(rows) == 12
    for image_id, row in rows.items():
        assert without_timing(row) == without_timing(single[image_id]), image_id
    assert summary_of(tmp_path / "beam") == summary_of(tmp_path / "single")

    letters = [p for p in (tmp_path / "beam" / "rows").glob("*-dead-letters-*.jsonl")]
    dead = {r["id"]: r["skipped"] for p in letters for r in map(json.loads, p.open())}
    assert set(dead) == {"broken", "lost", "SYN_0077_00009"}
    assert dead["broken"].startswith("undecodable")
    assert dead["lost"] == "label 'sarcoma' is not among the model's classes"
    assert dead["SYN_0077_00009"].startswith("missing mask")
    assert (tmp_path / "beam" / "report.md").read_text().count("were skipped") == 1


def test_the_audit_on_the_direct_runner_matches_the_single_process(
    archive, demo_model_dir, tmp_path
):
    argv = [str(demo_model_dir), "--images", str(archive), "--labels", str(archive / "labels.csv")]
    argv += ["--artefacts", "ink,ruler,identity"]
    assert audit([*argv, "--out", str(tmp_path / "single")]) == 0
    done = beam("audit", [*argv, "--out", str(tmp_path / "beam"), "--runner", "direct"])
    assert done.returncode == 0, done.stderr[-3000:]
    single, rows = single_rows(tmp_path / "single"), rows_of(tmp_path / "beam")
    assert sorted(rows) == sorted(single)
    for image_id, row in rows.items():
        assert without_timing(row) == without_timing(single[image_id]), image_id
    beam_summary, single_summary = summary_of(tmp_path / "beam"), summary_of(tmp_path / "single")
    assert beam_summary["verdicts"] == single_summary["verdicts"]
    assert beam_summary == single_summary


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _workers(root: int) -> list[int]:
    workers = []
    for pid in _descendants(root):
        try:
            if b"sdk_worker_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
        except FileNotFoundError:
            continue
    return workers


def test_a_run_whose_workers_die_finishes_with_every_row(demo_model_dir, tmp_path, faulty_folder):
    """Every worker process killed (as the OOM killer would) once the first rows are on disk:
    the local runner would hang for good; the launcher stops that run and runs the rest."""
    images = faulty_folder(tmp_path / "images", seed=78, count=40)
    out = tmp_path / "out"
    argv = [str(demo_model_dir), "--images", str(images), "--labels", str(images / "labels.csv")]
    argv += ["--methods", "gradcam,scorecam", "--sanity", "--out", str(out), "--runner", "direct"]
    command = [sys.executable, "-m", "model_store.evaluate", *argv]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list((out / "rows").glob("run-*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = _workers(run.pid)
    assert killed, "no worker processes to kill"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output[-3000:]
    assert "worker processes died" in output and "running them again" in output
    rows = rows_of(out)
    assert len(rows) == 42 and sum("skipped" in r for r in rows.values()) == 2
    summary = summary_of(out)
    assert summary["images"] == 40 and summary["skipped"]["count"] == 2
    attempts = {p.name.split("-")[3] for p in (out / "rows").glob("run-*.jsonl")}
    assert attempts >= {"1", "2"}

    again = beam("evaluate", argv)  # everything is there: nothing to redo
    assert again.returncode == 0 and "resuming: 42 images already" in again.stdout


@pytest.fixture
def cloud(tmp_path):
    log = open(tmp_path / "storage.log", "ab")
    emulator = storage.start_storage(servers.free_port(), log)
    storage.wait_storage(emulator)
    storage.create_bucket(emulator.url, "dermcam-tmp")
    local = localcloud.Cloud(tmp_path / "cloud", emulator.url)
    cloudapis.install(local)
    server = localcloud.serve(local)
    yield local, emulator
    server.shutdown()
    emulator.stop()
    log.close()


def _blob(location: str) -> bytes:
    """storage.googleapis.com/<bucket>/<path> (as Dataflow names it) or gs://<bucket>/<path>."""
    return read_bytes("gs://" + location.split("//")[-1].removeprefix("storage.googleapis.com/"))


def test_images_labels_and_masks_can_come_from_a_bucket(
    archive, demo_model_dir, cloud, tmp_path, monkeypatch
):
    """The same archive in gs://: the direct runner's report is the local folder's."""
    _, emulator = cloud
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    client, bucket, _ = gcs_location("gs://dermcam-tmp")
    for path in archive.iterdir():
        client.bucket(bucket).blob(f"archive/{path.name}").upload_from_filename(str(path))
    argv = [str(demo_model_dir), "--methods", "gradcam", "--no-curves"]
    local = ["--images", str(archive), "--labels", str(archive / "labels.csv")]
    local += ["--masks", str(archive), "--out", str(tmp_path / "local")]
    assert evaluate([*argv, *local]) == 0
    remote = [
        "--images",
        "gs://dermcam-tmp/archive",
        "--labels",
        "gs://dermcam-tmp/archive/labels.csv",
    ]
    remote += ["--masks", "gs://dermcam-tmp/archive/", "--out", str(tmp_path / "remote")]
    done = beam("evaluate", [*argv, *remote, "--runner", "direct"])
    assert done.returncode == 0, done.stderr[-3000:]
    local_summary, remote_summary = summary_of(tmp_path / "local"), summary_of(tmp_path / "remote")
    local_skips = local_summary.pop("skipped")
    remote_skips = remote_summary.pop("skipped")
    assert remote_summary == local_summary
    assert remote_skips["by_reason"] == local_skips["by_reason"]  # the mask's path is a gs:// one


def test_a_dataflow_job_is_staged_as_a_worker_needs_it(
    archive, demo_model_dir, cloud, tmp_path, monkeypatch
):
    local, emulator = cloud
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    endpoint = local.url.replace("127.0.0.1", "localhost") + "/dataflow"  # Beam wants a name
    argv = [str(demo_model_dir), "--images", str(archive), "--labels", str(archive / "labels.csv")]
    argv += ["--methods", "gradcam", "--out", str(tmp_path / "out"), "--runner", "dataflow"]
    argv += ["--project", "rehearsal", "--temp-location", "gs://dermcam-tmp/tmp"]
    argv += ["--dataflow-endpoint", endpoint, "--no-wait", "--machine-type", "n2-standard-4"]
    done = beam("evaluate", argv)
    assert done.returncode == 0, done.stderr[-3000:]
    (job,) = local.kind("dataflow-jobs").values()
    assert f"submitted: job {job['id']}" in done.stdout
    assert job["name"].startswith("dermcam-evaluate-") and job["projectId"] == "rehearsal"
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["machine_type"] == "n2-standard-4" and options["region"] == "europe-west1"

    (pool,) = job["environment"]["workerPools"]
    packages = {p["name"]: p["location"] for p in pool["packages"]}
    workflow = tarfile.open(fileobj=io.BytesIO(_blob(packages["workflow.tar.gz"])))
    names = {Path(*Path(n).parts[1:]).as_posix() for n in workflow.getnames()}
    assert {"dermcam/engine.py", "model_store/archive/handler.py", "setup.py"} <= names
    assert not [n for n in names if Path(n).name.startswith("keras_")]  # no TensorFlow code
    setup = next(m for m in workflow.getmembers() if m.name.endswith("/setup.py"))
    requirements = workflow.extractfile(setup).read().decode()
    assert "ai-edge-litert==" in requirements and "tensorflow" not in requirements

    client, bucket, prefix = gcs_location("gs://dermcam-tmp/tmp/dermcam-models/")
    uploaded = {Path(blob.name).name for blob in client.list_blobs(bucket, prefix=prefix)}
    assert {"manifest.json", "predict.tflite", "gradcam.tflite"} <= uploaded

    pipeline_pb = _blob(options["pipelineUrl"])
    script = (
        "import sys; from apache_beam.portability.api import beam_runner_api_pb2 as p; "
        "g = p.Pipeline.FromString(sys.stdin.buffer.read()); "
        "print('\\n'.join(t.unique_name for t in g.components.transforms.values()))"
    )
    steps = (
        subprocess.run(
            [str(beam_python()), "-c", script], input=pipeline_pb, capture_output=True, check=True
        )
        .stdout.decode()
        .split()
    )
    for step in ("Images", "Spread", "Explain", "WriteRows", "WriteDeadLetters"):
        assert step in steps, steps
