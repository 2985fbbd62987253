"""deploy.sh, unchanged, with the real gcloud CLI against the local cloud: twice (the second
run updates in place), then what the cloud holds is checked as an auditor would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from devstack import cloudapis, cloudfunctions, localcloud
from harness import servers, storage

pytestmark = pytest.mark.skipif(
    shutil.which("gcloud") is None, reason="the Google Cloud CLI is not on this machine"
)
PROJECT = "dermcam-rehearsal"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """One public deploy with App Check required (the local cloud's), then the same project
    redeployed --private: the second run is the update in place (a third deploy, public again,
    added 80 s and nothing the two do not show)."""
    from devstack import rehearsal

    state = tmp_path_factory.mktemp("rehearsal")
    summary = rehearsal.rehearse(state, clock=60, runs=1, fresh=True, private=True, appcheck=True)
    # What the public run left, and what the cloud held after the switch to --private.
    cloud = json.loads((state / "cloud-public.json").read_text())
    private = json.loads((state / "cloud" / "cloud.json").read_text())
    return summary, cloud["resources"], private["calls"], private["resources"]


def test_a_deploy_answers_publishes_and_is_updated_in_place(rehearsal):
    summary, resources, _, private = rehearsal
    (run,) = summary["runs"]
    assert run["functions"]["predict_top"] == "mel" and run["functions"]["heatmap_stored"]
    assert run["page"]["classes_shown"] == 7 and run["page"]["errors"] == []
    assert len(run["warmups"]) == 2  # each job fired on its cron, with a 200
    functions = resources["functions"]
    assert len(functions) == 2 and all(f["state"] == "ACTIVE" for f in functions.values())
    assert len(resources["revisions"]) == 2
    # the rerun (--private) updated both functions in place: the URLs stay
    urls = summary["private"]["urls"]
    assert urls == {k: v for k, v in run["urls"].items() if k != "page"}
    assert all(f["state"] == "ACTIVE" for f in private["functions"].values())
    revisions = private["revisions"]
    assert len(revisions) == 4  # two builds per function, each in a fresh virtualenv
    assert len({r["venv"] for r in revisions.values()}) == 4


def test_public_functions_require_app_check_and_the_page_obtains_tokens(rehearsal):
    summary, resources, calls, private = rehearsal
    (run,) = summary["runs"]
    # the functions answered a caller with a token (above) and refuse one without
    assert run["without_appcheck_token"] == {"predict": 401, "gradcam": 401}
    # the page, as published, attested itself and sent a token with each upload
    uploads = run["page"]["uploads_with_appcheck_token"]
    assert uploads and all(uploads) and run["page"]["errors"] == []
    config = run["page"]["config"]["appCheck"]
    assert config["exchangeUrl"].endswith("/firebaseappcheck") and "debugToken" not in config
    exchanged = [  # by the rehearsal's own calls and by the page (after its CORS preflight)
        c["status"]
        for c in calls
        if c["api"] == "firebaseappcheck" and c["path"].endswith(":exchangeDebugToken")
        and c["method"] == "POST"
    ]  # fmt: skip
    assert len(exchanged) >= 2 and set(exchanged) == {200}
    base = f"projects/{PROJECT}/locations/europe-west1/functions"
    for name in ("predict", "gradcam"):
        env = resources["functions"][f"{base}/dermcam-{name}"]["serviceConfig"][
            "environmentVariables"
        ]
        assert env["DERMCAM_APPCHECK_PROJECT_NUMBER"] == config["projectNumber"]
        assert env["DERMCAM_APPCHECK_JWKS_URL"] == config["exchangeUrl"] + "/v1/jwks"
        # redeployed --private without --appcheck: the setting went with it
        env = private["functions"][f"{base}/dermcam-{name}"]["serviceConfig"]
        assert "DERMCAM_APPCHECK_PROJECT_NUMBER" not in env["environmentVariables"]
    assert len(run["warmups"]) == 2  # GET warmups need no App Check token


def test_functions_run_with_the_deployed_configuration(rehearsal):
    _, resources, *_ = rehearsal
    base = f"projects/{PROJECT}/locations/europe-west1/functions"
    predict = resources["functions"][f"{base}/dermcam-predict"]["serviceConfig"]
    gradcam = resources["functions"][f"{base}/dermcam-gradcam"]["serviceConfig"]
    assert (predict["availableMemory"], predict["availableCpu"]) == ("128Mi", "0.333")
    assert (gradcam["availableMemory"], gradcam["availableCpu"]) == ("256Mi", "0.333")
    assert predict["maxInstanceRequestConcurrency"] == 1
    assert "DERMCAM_BUCKET" not in predict["environmentVariables"]
    assert gradcam["environmentVariables"]["DERMCAM_BUCKET"] == f"{PROJECT}-dermcam-heatmaps"
    assert predict["serviceAccountEmail"].startswith("dermcam-predict@")


def test_the_heatmap_bucket_is_private_with_its_lifecycle(rehearsal):
    _, resources, *_ = rehearsal
    bucket = resources["buckets"][f"{PROJECT}-dermcam-heatmaps"]
    assert bucket["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert bucket["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    rule = bucket["lifecycle"]["rule"][0]
    assert rule["action"]["type"] == "Delete" and rule["condition"]["age"] == 7
    policy = resources["bucket-policies"][f"{PROJECT}-dermcam-heatmaps"]
    members = {m for b in policy["bindings"] for m in b["members"]}
    assert "allUsers" not in members and "allAuthenticatedUsers" not in members
    roles = {b["role"]: b["members"] for b in policy["bindings"]}
    gradcam = f"serviceAccount:dermcam-gradcam@{PROJECT}.iam.gserviceaccount.com"
    assert gradcam in roles["roles/storage.objectCreator"]
    assert not any("dermcam-predict" in m for m in members)  # predict has no storage role
    token = resources["service-account-policies"][
        f"projects/{PROJECT}/serviceAccounts/dermcam-gradcam@{PROJECT}.iam.gserviceaccount.com"
    ]
    assert token["bindings"][0]["role"] == "roles/iam.serviceAccountTokenCreator"
    page = resources["bucket-policies"][f"{PROJECT}-dermcam-page"]
    assert page["bindings"] == [{"members": ["allUsers"], "role": "roles/storage.objectViewer"}]


def test_invokers_and_schedules(rehearsal):
    _, resources, calls, _ = rehearsal
    for policy in resources["run-policies"].values():
        assert {"members": ["allUsers"], "role": "roles/run.invoker"} in policy["bindings"]
    jobs = resources["jobs"]
    assert len(jobs) == 2
    for job in jobs.values():
        assert job["schedule"] == "*/5 * * * *" and job["httpTarget"]["uri"].endswith("?warmup=1")
    # the rerun patched what the first run created
    assert any(c["method"] == "PATCH" and c["api"] == "cloudscheduler" for c in calls)
    assert any(c["method"] == "PATCH" and c["api"] == "cloudfunctions" for c in calls)


def test_private_functions_refuse_anonymous_callers_and_let_the_scheduler_in(rehearsal):
    summary, _, _, resources = rehearsal
    private = summary["private"]
    assert private["anonymous"] == {"predict": 403, "gradcam": 403}
    scheduler = f"dermcam-scheduler@{PROJECT}.iam.gserviceaccount.com"
    for name, policy in resources["run-policies"].items():
        members = {
            m for b in policy["bindings"] if b["role"] == "roles/run.invoker" for m in b["members"]
        }
        assert members == {f"serviceAccount:{scheduler}"}, (name, members)
    for run in private["warmups"].values():  # fired with an ID token for the function's URL
        assert run["status"] == 200 and run["oidc_service_account"] == scheduler
        assert run["uri"].startswith(run["oidc_audience"])
    assert "page" not in private["urls"]  # a browser could not call private functions


@pytest.fixture
def cloud(tmp_path):
    log = open(tmp_path / "storage.log", "ab")
    emulator = storage.start_storage(servers.free_port(), log)
    storage.wait_storage(emulator)
    local = localcloud.Cloud(tmp_path / "cloud", emulator.url)
    cloudapis.install(local, disabled=("cloudscheduler.googleapis.com",))
    cloudfunctions.install(local)
    server = localcloud.serve(local)
    env = {**os.environ, **localcloud.environment(local.url, tmp_path / "gcloud")}
    yield local, env, tmp_path
    server.shutdown()
    cloudfunctions.stop_all(local)
    emulator.stop()
    log.close()


def test_a_function_that_would_install_tensorflow_fails_its_build(cloud):
    local, env, tmp = cloud
    source = tmp / "fn"
    source.mkdir()
    (source / "main.py").write_text("def f(request):\n    return 'ok'\n")
    (source / "requirements.txt").write_text(
        "functions-framework==3.10.2\ntensorflow-cpu==2.21.0\n"
    )
    done = subprocess.run(
        [
            "gcloud",
            "functions",
            "deploy",
            "f",
            "--gen2",
            "--project",
            "p",
            "--region",
            "r",
            "--runtime",
            "python312",
            "--source",
            str(source),
            "--entry-point",
            "f",
            "--trigger-http",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "would install tensorflow-cpu" in done.stderr
    function = local.kind("functions")["projects/p/locations/r/functions/f"]
    assert function["state"] == "FAILED"
    with zipfile.ZipFile(next((local.state_dir / "uploads").iterdir())) as archive:
        assert "requirements.txt" in archive.namelist()  # what gcloud really uploaded


def test_deploy_sh_stops_on_a_disabled_api_and_without_a_login(cloud):
    from devstack import rehearsal

    local, env, tmp = cloud
    root = Path(__file__).resolve().parents[1]
    command = ["./deploy.sh", "--project", "p"]
    logged_out = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert logged_out.returncode != 0 and "not logged in" in logged_out.stderr
    rehearsal.login(local, env, tmp)
    disabled = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert disabled.returncode != 0
    assert "required APIs are disabled: cloudscheduler.googleapis.com" in disabled.stderr
    assert not local.kind("functions")  # nothing deployed
