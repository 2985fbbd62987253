"""deploy.sh's argument checks, dry run and private-mode flags against a fake gcloud that records
its calls (a whole deployment goes through the real gcloud in test_rehearsal.py); staged folders
run as in the cloud."""

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


def test_the_functions_deploy_side_by_side_and_either_failing_fails_the_run(deploy):
    done, calls = deploy(env={"FAKE_GCLOUD_FAIL": "functions deploy dermcam-gradcam"})
    assert done.returncode == 1
    assert "dermcam-gradcam failed to deploy" in done.stderr and "Build failed" in done.stderr
    assert find(calls, "functions", "deploy", "dermcam-predict")  # the other went ahead
    assert not find(calls, "scheduler") and not find(calls, "storage", "cp")  # then it stopped
    # each one's output whole, in order, whenever each finished
    out = done.stdout
    assert out.index("+ gcloud functions deploy dermcam-predict") < out.index(
        "+ gcloud functions deploy dermcam-gradcam"
    )


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
    from harness import servers

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

    urls, started = {}, []
    try:
        for name in ("predict", "gradcam"):
            env = servers.function_env(stack.storage_url, stack.bucket, {"DERMCAM_MODEL_DIR": ""})
            log = open(deploy.build / f"{name}.log", "ab")
            started.append(
                servers.start_function(
                    name, env=env, log=log, source=deploy.build / name / "main.py"
                )
            )
            urls[name] = started[-1].url
            started[-1].wait_up(60)
        files = {"image": ("lesion.png", lesion_png)}
        predicted = requests.post(urls["predict"], files=files, timeout=60).json()
        assert predicted["top"]["code"] == "mel" and predicted["model"]["demo"] is True
        requests.get(urls["gradcam"], params={"warmup": "1"}, timeout=60)  # as scheduled
        explained = requests.post(urls["gradcam"], files=files, timeout=60).json()
        assert explained["target"]["code"] == "mel" and explained["heatmap"]["stored"] is True
        assert requests.get(explained["heatmap"]["url"], timeout=10).status_code == 200
    finally:
        servers.stop_all(started)


def test_a_model_is_deployed_at_its_recorded_fit_check(deploy, demo_model_dir, tmp_path):
    """A model whose fit check is in its manifest gets that configuration, flags still win;
    one without, that is not a demo, is refused rather than given the demo's sizes."""
    model = tmp_path / "model"
    shutil.copytree(demo_model_dir, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["demo"] = False
    (model / "manifest.json").write_text(json.dumps(manifest))
    done, _ = deploy("--model-dir", str(model), "--dry-run")
    assert done.returncode != 0 and "has no recorded fit check" in done.stderr
    manifest["fitcheck"] = {
        "mode": "predicted",
        "predict": {"recommended": {"memory_mb": 256, "cpu": 0.167}},
        "gradcam": {"recommended": {"memory_mb": 512, "cpu": 0.5}},
    }
    (model / "manifest.json").write_text(json.dumps(manifest))
    done, _ = deploy("--model-dir", str(model), "--dry-run", "--gradcam-cpu", "1")
    assert done.returncode == 0, done.stderr
    predict = next(line for line in done.stdout.splitlines() if "deploy dermcam-predict" in line)
    gradcam = next(line for line in done.stdout.splitlines() if "deploy dermcam-gradcam" in line)
    assert "--memory 256Mi" in predict and "--cpu 0.167" in predict
    assert "--memory 512Mi" in gradcam and "--cpu 1" in gradcam  # the flag wins


def test_the_trust_blocks_reference_travels_with_the_manifest(deploy, scoped_demo):
    """A calibrated manifest names its out-of-scope reference features; without them the
    function could not read the manifest, so staging copies them."""
    done, _ = deploy("--dry-run", "--model-dir", str(scoped_demo))
    assert done.returncode == 0, done.stderr
    for name in ("predict", "gradcam"):
        assert (deploy.build / name / "model" / "scope_reference.npy").is_file()


def test_a_monthly_budget_sets_max_instances_and_prints_the_worst_case(deploy):
    """The demo's tiers (predict 128Mi / 0.333 vCPU, gradcam 256Mi / 0.333): $0.0443 and
    $0.2254 per busy instance-hour (10 requests a second, one heatmap write each), so $1000
    a month keeps 5 of each busy all month."""
    page = (
        "--appcheck-site-key",
        "SITE",
        "--firebase-app-id",
        "1:1:web:a",
        "--firebase-api-key",
        "K",
    )
    done, calls = deploy("--monthly-budget", "1000", "--appcheck", "123456789012", *page)
    assert done.returncode == 0, done.stderr
    assert "at most 5 instances of each function; worst case $1.35 an hour" in done.stdout
    assert "one client gets at most 150 a minute from each function, sustained" in done.stdout
    assert "(300 in one minute with each instance's burst)" in done.stdout
    for call in find(calls, "functions", "deploy"):
        assert flag(call, "--max-instances") == "5"
        env = flag(call, "--set-env-vars")
        assert "DERMCAM_RATE_LIMIT_PER_MINUTE=30" in env  # public: limited by default
        assert "DERMCAM_APPCHECK_PROJECT_NUMBER=123456789012" in env
        assert "DERMCAM_APPCHECK_JWKS_URL=https://firebaseappcheck.googleapis.com/v1/jwks" in env


@pytest.mark.parametrize(
    "args, message",
    [
        (("--monthly-budget", "5"), "cannot keep one busy instance of each function"),
        (("--monthly-budget", "lots"), "in USD"),
        (("--appcheck", "my-project"), "project NUMBER"),
        (("--appcheck", "123"), "the page needs --appcheck-site-key"),
        (("--rate-limit", "-1"), "whole number"),
        (("--max-instances", "0"), ">= 1"),
    ],
)
def test_abuse_bounds_refuse_what_cannot_hold(deploy, args, message):
    done, calls = deploy(*args)
    assert done.returncode != 0 and message in done.stderr
    assert not find(calls, "functions", "deploy")


def test_private_functions_have_no_rate_limit_unless_asked(deploy):
    done, calls = deploy("--private")
    assert done.returncode == 0, done.stderr
    for call in find(calls, "functions", "deploy"):
        assert "DERMCAM_RATE_LIMIT_PER_MINUTE=0" in flag(call, "--set-env-vars")


def test_the_page_is_told_where_to_obtain_app_check_tokens(deploy):
    done, _ = deploy(
        "--appcheck", "123", "--appcheck-site-key", "SITE", "--firebase-app-id", "1:123:web:a",
        "--firebase-api-key", "KEY", "--page-bucket", "none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("window.DERMCAM_CONFIG"))
    config = json.loads(line.split("=", 1)[1].strip().rstrip(";"))
    assert config["appCheck"] == {
        "projectNumber": "123", "appId": "1:123:web:a", "apiKey": "KEY", "siteKey": "SITE",
        "exchangeUrl": "https://firebaseappcheck.googleapis.com",
    }  # fmt: skip
