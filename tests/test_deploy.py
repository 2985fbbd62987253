"""deploy.sh against a fake gcloud that records its calls; staged folders run as in the cloud."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import requests

from conftest import ROOT

FAKES = ROOT / "tests" / "fakes"


@pytest.fixture
def deploy(tmp_path):
    """run(*args, env=None) -> (CompletedProcess, [recorded gcloud calls])."""
    log = tmp_path / "gcloud.log"
    build = tmp_path / "build"

    def run(*args, env=None, with_gcloud=True):
        log.write_text("")
        environment = {
            **os.environ,
            "PATH": f"{FAKES}:{os.environ['PATH']}",
            "FAKE_GCLOUD_LOG": str(log),
            "FAKE_GCLOUD_STATE": str(tmp_path / "state"),
            "DERMCAM_BUILD_DIR": str(build),
            **(env or {}),
        }
        if not with_gcloud:
            environment["PATH"] = _path_without_gcloud(tmp_path / "bin")
        done = subprocess.run(
            ["bash", str(ROOT / "deploy.sh"), "--project", "proj", *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return done, calls

    run.build = build
    return run


def _path_without_gcloud(bin_dir) -> str:
    """A PATH with the tools deploy.sh uses, and no gcloud (this machine may have one)."""
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "dirname", "mktemp", "cp", "rm", "mkdir", "grep", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


def find(calls, *words):
    return [c for c in calls if all(w in c["args"] for w in words)]


def flag(call, name):
    return call["args"][call["args"].index(name) + 1]


def test_shellcheck_clean():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    subprocess.run(["shellcheck", str(ROOT / "deploy.sh")], check=True)


def test_full_deploy(deploy):
    done, calls = deploy()
    assert done.returncode == 0, done.stderr

    deploys = {c["args"][2]: c for c in find(calls, "functions", "deploy")}
    assert set(deploys) == {"dermcam-predict", "dermcam-gradcam"}
    for name, call in deploys.items():
        short = name.removeprefix("dermcam-")
        for word in ("--gen2", "--trigger-http", "--allow-unauthenticated"):
            assert word in call["args"]
        assert flag(call, "--runtime") == "python312" and flag(call, "--entry-point") == short
        assert flag(call, "--memory") in ("128Mi", "256Mi", "512Mi")
        assert flag(call, "--cpu") == "0.333" and flag(call, "--concurrency") == "1"
        assert flag(call, "--source").endswith(f"build/{short}")
        assert flag(call, "--service-account") == f"{name}@proj.iam.gserviceaccount.com"
    assert "DERMCAM_BUCKET" not in flag(deploys["dermcam-predict"], "--set-env-vars")
    gradcam_env = flag(deploys["dermcam-gradcam"], "--set-env-vars")
    assert "DERMCAM_BUCKET=proj-dermcam-heatmaps" in gradcam_env
    assert "DERMCAM_SIGNED_URL_TTL=900" in gradcam_env
    assert "THREADS=1" in gradcam_env.split("##")

    create = find(calls, "buckets", "create", "gs://proj-dermcam-heatmaps")[0]
    assert "--public-access-prevention" in create["args"]
    assert "--uniform-bucket-level-access" in create["args"]
    update = find(calls, "buckets", "update", "gs://proj-dermcam-heatmaps")[0]
    lifecycle = json.loads(update["files"]["--lifecycle-file"])["rule"][0]
    assert lifecycle["action"]["type"] == "Delete" and lifecycle["condition"]["age"] == 7
    assert json.loads(update["files"]["--cors-file"])[0]["origin"] == [
        "https://storage.googleapis.com"
    ]

    bucket_grants = find(calls, "add-iam-policy-binding", "gs://proj-dermcam-heatmaps")
    members = {flag(c, "--member") for c in bucket_grants}
    assert members == {"serviceAccount:dermcam-gradcam@proj.iam.gserviceaccount.com"}
    assert {flag(c, "--role") for c in bucket_grants} == {
        "roles/storage.objectCreator",
        "roles/storage.objectViewer",
    }
    assert not [
        c for c in calls if "allUsers" in c["args"] and "gs://proj-dermcam-heatmaps" in c["args"]
    ]
    token = find(calls, "service-accounts", "add-iam-policy-binding")[0]
    assert flag(token, "--role") == "roles/iam.serviceAccountTokenCreator"
    assert token["args"][3] == "dermcam-gradcam@proj.iam.gserviceaccount.com"

    jobs = find(calls, "scheduler", "jobs", "create")
    assert len(jobs) == 2
    for job in jobs:
        assert flag(job, "--uri").endswith("-x7y2-ew.a.run.app?warmup=1")
        assert flag(job, "--schedule") == "*/5 * * * *" and flag(job, "--http-method") == "GET"
        assert "--oidc-service-account-email" not in job["args"]

    page = find(calls, "storage", "cp")[0]["files"]["config.js"]
    assert "https://dermcam-predict-x7y2-ew.a.run.app" in page
    assert "https://dermcam-gradcam-x7y2-ew.a.run.app" in page
    assert "page: https://storage.googleapis.com/proj-dermcam-page/index.html" in done.stdout

    again, calls = deploy()  # idempotent: a rerun updates
    assert again.returncode == 0, again.stderr
    assert not find(calls, "buckets", "create") and not find(calls, "service-accounts", "create")
    assert len(find(calls, "scheduler", "jobs", "update")) == 2
    assert len(find(calls, "functions", "deploy")) == 2


def test_private_functions_get_oidc_warmups(deploy):
    done, calls = deploy(
        "--private", "--predict-memory", "128Mi", "--predict-cpu", "1", "--heatmap-days", "3"
    )
    assert done.returncode == 0, done.stderr
    for call in find(calls, "functions", "deploy"):
        assert "--no-allow-unauthenticated" in call["args"]
    predict = find(calls, "functions", "deploy", "dermcam-predict")[0]
    assert flag(predict, "--memory") == "128Mi" and flag(predict, "--cpu") == "1"
    for job in find(calls, "scheduler", "jobs", "create"):
        assert flag(job, "--oidc-service-account-email").startswith("dermcam-scheduler@")
    assert len(find(calls, "add-invoker-policy-binding")) == 2
    update = find(calls, "buckets", "update", "gs://proj-dermcam-heatmaps")[0]
    assert json.loads(update["files"]["--lifecycle-file"])["rule"][0]["condition"]["age"] == 3


def test_dry_run_runs_nothing(deploy):
    done, calls = deploy("--dry-run")
    assert done.returncode == 0, done.stderr
    assert calls == []
    assert "+ gcloud functions deploy dermcam-predict" in done.stdout
    assert "+ gcloud scheduler jobs create http dermcam-gradcam-warmup" in done.stdout
    assert (deploy.build / "predict" / "main.py").is_file()


@pytest.mark.parametrize(
    "args, env, message",
    [
        ((), {"FAKE_GCLOUD_LOGGED_OUT": "1"}, "not logged in"),
        (
            (),
            {"FAKE_GCLOUD_DISABLED": "cloudscheduler.googleapis.com"},
            "cloudscheduler.googleapis.com",
        ),
        (("--gradcam-memory", "1Gi"), {}, "512Mi or below"),
        (("--predict-cpu", "0.05"), {}, "use 0.08 to 1"),
        (("--gradcam-cpu", "1.5"), {}, "use 0.08 to 1"),
        (("--gradcam-cpu", "0.5", "--concurrency", "4"), {}, "needs --concurrency 1"),
        (("--model-dir", "/nonexistent"), {}, "no manifest.json"),
    ],
)
def test_clear_errors(deploy, args, env, message):
    done, calls = deploy(*args, env=env)
    assert done.returncode != 0 and message in done.stderr
    assert not find(calls, "functions", "deploy")


def test_missing_gcloud(deploy):
    done, _ = deploy(with_gcloud=False)
    assert done.returncode != 0 and "gcloud is not installed" in done.stderr


def test_staged_folders_run_under_functions_framework(deploy, stack, lesion_png):
    from devstack import stack as devstack

    done, _ = deploy("--dry-run")
    assert done.returncode == 0, done.stderr
    for name, other in (("predict", "gradcam"), ("gradcam", "predict")):
        staged = deploy.build / name
        assert (staged / "model" / f"{name}.tflite").is_file()
        assert not (staged / "model" / f"{other}.tflite").exists()
        assert not list((staged / "dermcam").glob("keras_*.py"))
        lines = (staged / "requirements.txt").read_text().lower().splitlines()
        packages = [line for line in lines if line.strip() and not line.startswith("#")]
        assert packages and not [p for p in packages if "tensorflow" in p or "keras" in p]
        # The staged copy of the package is the one the function imports.
        found = subprocess.run(
            [sys.executable, "-c", "import dermcam; print(dermcam.__file__)"],
            cwd=staged,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert found.startswith(str(staged))

    urls, procs = {}, []
    try:
        for name in ("predict", "gradcam"):
            port = devstack.free_port()
            env = devstack.function_env(stack.storage_url, stack.bucket, {"DERMCAM_MODEL_DIR": ""})
            log = open(deploy.build / f"{name}.log", "ab")
            procs.append(
                devstack.start_function(
                    name, port, env, log, source=deploy.build / name / "main.py"
                )
            )
            urls[name] = f"http://127.0.0.1:{port}"
            devstack.wait_until_up(urls[name], 60, procs[-1])
        files = {"image": ("lesion.png", lesion_png)}
        predicted = requests.post(urls["predict"], files=files, timeout=60).json()
        assert predicted["top"]["code"] == "mel" and predicted["model"]["demo"] is True
        requests.get(urls["gradcam"], params={"warmup": "1"}, timeout=60)  # as scheduled
        explained = requests.post(urls["gradcam"], files=files, timeout=60).json()
        assert explained["target"]["code"] == "mel" and explained["heatmap"]["stored"] is True
        assert requests.get(explained["heatmap"]["url"], timeout=10).status_code == 200
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
