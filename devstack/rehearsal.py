"""make deploy-local: deploy.sh, unchanged, with the real gcloud, against a local cloud.

    python -m devstack.rehearsal [--state .run/rehearsal] [--clock 60] [--runs 2] [--fresh]
                                 [--private] [--appcheck]

Starts fake-gcs-server and devstack.localcloud, logs gcloud in with a throwaway service
account (its own configuration folder: your gcloud setup is untouched), runs ./deploy.sh with
only the environment pointing gcloud at the local cloud, then checks what a user would: both
functions answer a real image through the URLs deploy.sh printed, the published page (from the
page bucket, as deployed) shows a heatmap, and the warmup jobs fire on their cron (the local
scheduler's clock runs `--clock` times faster, so */5 fires within seconds). `--runs 2` deploys
a second time: everything is updated in place. `--private` then redeploys with `--private`:
anonymous calls must get 403 and the scheduler's OIDC-token warmups must still get in.
`--appcheck` deploys the public runs with `--appcheck` against the local cloud's App Check
(devstack.cloudappcheck): a debug token is registered for the page's web app as a team
registers one in the Firebase console, calls without a token must get 401, the page (its
Chromium given the debug token as the JS SDK takes it) obtains App Check tokens and shows the
heatmap, and the warmups still fire. The local cloud's record (every call, every resource)
is left in STATE/cloud.json; a summary is printed and written to STATE/summary.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

from dermcam.appcheck import HEADER
from devstack import browser as chromium
from devstack import cloudapis, cloudappcheck, cloudfunctions, localcloud
from harness import servers
from harness import storage as emulator

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "dermcam-rehearsal"
REGION = "europe-west1"


def login(cloud: localcloud.Cloud, env: dict[str, str], folder: Path) -> str:
    """A throwaway service-account key whose token endpoint is the local cloud."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = f"deployer@{PROJECT}.iam.gserviceaccount.com"
    key_file = folder / "deployer-key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "local",
                "private_key": pem,
                "client_email": account,
                "client_id": "1",
                "token_uri": f"{cloud.url}/oauth2/token",
            }
        )
    )
    login_env = {k: v for k, v in env.items() if k != "CLOUDSDK_AUTH_DISABLE_CREDENTIALS"}
    subprocess.run(
        ["gcloud", "auth", "activate-service-account", "--key-file", str(key_file)],
        env=login_env,
        check=True,
        capture_output=True,
        text=True,
    )
    return account


def deploy(env: dict[str, str], origin: str, log: Path, *extra: str) -> dict[str, str]:
    """./deploy.sh as a user runs it; the URLs it printed."""
    command = ["./deploy.sh", "--project", PROJECT, "--region", REGION, "--origin", origin]
    command += extra
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(
            f"deploy.sh failed ({done.returncode}); see {log}:\n"
            + "\n".join(done.stderr.strip().splitlines()[-8:])
        )
    printed = dict(re.findall(r"^(predict|gradcam|page): (\S+)$", done.stdout, re.M))
    printed["seconds"] = f"{time.monotonic() - started:.0f}"
    return printed


def photo() -> bytes:
    """A generated melanoma: the demo model's answer to it is known (mel)."""
    from model_store.synthetic import lesion_image

    pixels, _ = lesion_image(seed=12, index=0, size=400, label=4)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class AppCheckSetup:
    """What deploy.sh is told (--appcheck ...) and the debug token registered for the page."""

    endpoint: str  # the local cloud's App Check API
    debug_token: str
    project_number: str = "424242424242"
    app_id: str = "1:424242424242:web:0d0e0a0d0b0e0e0f"
    api_key: str = "rehearsal-browser-key"

    def flags(self) -> tuple[str, ...]:
        return (
            "--appcheck", self.project_number, "--appcheck-site-key", "rehearsal-site-key",
            "--firebase-app-id", self.app_id, "--firebase-api-key", self.api_key,
        )  # fmt: skip

    def token(self) -> str:
        """An App Check token for the web app, exchanged as the page exchanges one."""
        answer = requests.post(
            f"{self.endpoint}/v1/projects/{self.project_number}/apps/{self.app_id}"
            ":exchangeDebugToken",
            params={"key": self.api_key},
            json={"debugToken": self.debug_token},
            timeout=30,
        )
        answer.raise_for_status()
        return answer.json()["token"]


def register_debug_token(cloud: localcloud.Cloud) -> AppCheckSetup:
    """A debug token for the page's web app, registered through App Check's REST API."""
    setup = AppCheckSetup(f"{cloud.url}/{cloudappcheck.API}", str(uuid.uuid4()))
    requests.post(
        f"{setup.endpoint}/v1/projects/{setup.project_number}/apps/{setup.app_id}/debugTokens",
        json={"displayName": "rehearsal", "token": setup.debug_token},
        timeout=30,
    ).raise_for_status()
    return setup


def call_functions(urls: dict[str, str], appcheck: AppCheckSetup | None = None) -> dict:
    image = photo()
    files = {"image": ("lesion.jpg", image, "image/jpeg")}
    headers = {HEADER: appcheck.token()} if appcheck else {}
    predicted = requests.post(urls["predict"], files=files, headers=headers, timeout=120)
    predicted.raise_for_status()
    requests.get(urls["gradcam"], params={"warmup": "1"}, timeout=120).raise_for_status()
    explained = requests.post(urls["gradcam"], files=files, headers=headers, timeout=120)
    explained.raise_for_status()
    heatmap = explained.json()["heatmap"]
    png = requests.get(heatmap["url"], timeout=30)
    png.raise_for_status()
    return {
        "predict_top": predicted.json()["top"]["code"],
        "gradcam_target": explained.json()["target"]["code"],
        "heatmap_object": heatmap["object"],
        "heatmap_stored": heatmap["stored"],
        "heatmap_png_bytes": len(png.content),
    }


def open_page(page_url: str, folder: Path, debug_token: str | None = None) -> dict:
    """The published page, in Chromium: a photo in, the heatmap shown; with `debug_token`,
    set in the browser before the page loads (as App Check's SDK takes one in CI). In a
    thread of its own: Playwright's sync API refuses a thread whose event loop another sync
    Playwright runs (a test process that already holds the session's browser)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_open_page, page_url, folder, debug_token).result()


def _open_page(page_url: str, folder: Path, debug_token: str | None) -> dict:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    picture = folder / "lesion.jpg"
    picture.write_bytes(photo())
    with sync_playwright() as playwright:
        browser = chromium.launch(playwright)
        page = browser.new_page()
        if debug_token:
            page.add_init_script(f"self.FIREBASE_APPCHECK_DEBUG_TOKEN = {json.dumps(debug_token)};")
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sent_tokens: list[bool] = []  # per upload to a function: did it carry a token?
        page.on(
            "request",
            lambda r: (
                r.method == "POST"
                and ":exchange" not in r.url
                and sent_tokens.append(HEADER.lower() in r.headers)
            ),
        )
        answered: list[str] = []  # what the page's requests got, for a failure's message
        page.on("response", lambda r: answered.append(f"{r.status} {r.request.method} {r.url}"))
        page.goto(page_url)
        page.set_input_files("#file-input", str(picture))
        try:
            page.wait_for_function(
                "() => { const o = document.getElementById('overlay');"
                " return !o.hidden && o.complete && o.naturalWidth > 0; }",
                timeout=120_000,
            )
        except PlaywrightTimeout as exc:
            shown = page.locator("#status").inner_text() + " " + page.locator("#error").inner_text()
            raise RuntimeError(
                f"the published page showed no heatmap in 120 s; it says {shown.strip()!r};"
                f" errors {errors}; its requests: {answered[-8:]}"
            ) from exc
        shot = folder / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        rows = page.locator("#predictions li").count()
        config = page.evaluate("() => window.DERMCAM_CONFIG")
        browser.close()
    return {
        "page": page_url,
        "classes_shown": rows,
        "screenshot": str(shot),
        "errors": errors,
        "config": config,  # the published config.js, as the page read it
        "uploads_with_appcheck_token": sent_tokens,
    }


def call_anonymously(urls: dict[str, str]) -> dict:
    """What a caller with neither an ID token nor an App Check token gets from each function
    (private: 403; App Check: 401)."""
    image = {"image": ("lesion.jpg", photo(), "image/jpeg")}
    return {
        name: requests.post(urls[name], files=image, timeout=120).status_code
        for name in ("predict", "gradcam")
    }


def wait_for_warmups(cloud: localcloud.Cloud, since: float, timeout_s: float) -> dict:
    """Until every job has fired once after `since` with a 200."""
    deadline = time.monotonic() + timeout_s
    jobs = list(cloud.kind("jobs"))
    while time.monotonic() < deadline:
        fired = {}
        for job in jobs:
            runs = cloud.kind("job-runs").get(job, {}).get("runs", [])
            ok = [r for r in runs if r["status"] == 200 and r.get("fired_at", since) >= since]
            if ok:
                fired[job] = ok[-1]
        if len(fired) == len(jobs) and jobs:
            return fired
        time.sleep(0.5)
    raise RuntimeError(f"warmup jobs did not fire within {timeout_s:.0f} s: {jobs}")


def rehearse(
    state: Path,
    clock: float,
    runs: int,
    fresh: bool,
    private: bool = False,
    model: str | None = None,
    appcheck: bool = False,
) -> dict:
    """Deploy `runs` times (then --private when asked); `model`: deploy.sh's --model;
    `appcheck`: the public runs with --appcheck, through the local cloud's App Check."""
    chosen = ("--model", model) if model else ()
    if fresh:
        shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    storage_log = open(state / "storage.log", "ab")  # noqa: SIM115
    storage = emulator.start_storage(servers.free_port(), storage_log, state / "storage")
    storage_url = storage.url
    emulator.wait_storage(storage)
    cloud = localcloud.Cloud(state / "cloud", storage_url, clock)
    cloudapis.install(cloud)
    cloudfunctions.install(cloud)
    server = localcloud.serve(cloud)
    summary: dict = {"project": PROJECT, "storage": storage_url, "model": model, "runs": []}
    try:
        config = state / "gcloud"
        env = {
            **os.environ,
            **localcloud.environment(cloud.url, config),
            "DERMCAM_BUILD_DIR": str(state / "build"),
        }
        summary["account"] = login(cloud, env, state)
        checked = register_debug_token(cloud) if appcheck else None
        public = (*chosen, *checked.flags()) if checked else chosen
        if checked:
            env["DERMCAM_APPCHECK_ENDPOINT"] = checked.endpoint
        for run in range(1, runs + 1):
            started = time.time()
            urls = deploy(env, storage_url, state / f"deploy-{run}.log", *public)
            result = {
                "run": run,
                "deploy_seconds": urls.pop("seconds"),
                "urls": urls,
                "functions": call_functions(urls, checked),
            }
            if checked:
                result["without_appcheck_token"] = call_anonymously(urls)
            page = f"{storage_url}/{PROJECT}-dermcam-page/index.html"
            result["page"] = open_page(page, state, checked.debug_token if checked else None)
            result["warmups"] = wait_for_warmups(cloud, started, 60 * 5 / clock + 30)
            summary["runs"].append(result)
            print(json.dumps(result, indent=2), flush=True)
        if private:
            # The same project switched to --private in place: anonymous callers are refused,
            # the scheduler's OIDC token still warms both functions.
            with cloud.lock:
                cloud.save()
                shutil.copy(state / "cloud" / "cloud.json", state / "cloud-public.json")
            urls = deploy(env, storage_url, state / "deploy-private.log", *chosen, "--private")
            deployed = time.time()  # warmups fired before the jobs were updated carry no token
            result = {
                "run": "private",
                "deploy_seconds": urls.pop("seconds"),
                "urls": urls,
                "anonymous": call_anonymously(urls),
                "warmups": wait_for_warmups(cloud, deployed, 60 * 5 / clock + 30),
            }
            summary["private"] = result
            print(json.dumps(result, indent=2), flush=True)
        summary["revisions"] = sorted(cloud.kind("revisions"))
        (state / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary
    finally:
        server.shutdown()
        cloudfunctions.stop_all(cloud)
        storage.stop()
        storage_log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.rehearsal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state", default=str(ROOT / ".run" / "rehearsal"))
    parser.add_argument("--clock", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="forget an earlier rehearsal")
    parser.add_argument(
        "--private", action="store_true", help="then redeploy with --private and check who gets in"
    )
    parser.add_argument("--model", help="deploy.sh --model NAME (demo, ham10000, ...)")
    parser.add_argument(
        "--appcheck", action="store_true", help="deploy the public runs with App Check required"
    )
    args = parser.parse_args(argv)
    if shutil.which("gcloud") is None:
        print("the Google Cloud CLI is not installed (Debian: google-cloud-cli)", file=sys.stderr)
        return 2
    summary = rehearse(
        Path(args.state), args.clock, args.runs, args.fresh, args.private, args.model, args.appcheck
    )
    last = summary["runs"][-1]
    print(
        f"\nrehearsed {len(summary['runs'])} deployment(s) of {PROJECT} with the real gcloud: "
        f"predict {last['urls']['predict']}, gradcam {last['urls']['gradcam']}, "
        f"page {last['page']['page']}; revisions {summary['revisions']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
