"""App Check tokens (dermcam.appcheck) against a local App Check of our own
(devstack.appcheck: a key pair, its JWKS as a file), every bad token refused, never a 5xx;
and the functions over HTTP: no token, no model work."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dermcam import appcheck
from dermcam.appcheck import MAX_TOKEN_BYTES, AppCheckVerifier
from dermcam.config import load_settings
from dermcam.errors import Unauthenticated
from devstack.appcheck import PROJECT_NUMBER, LocalAppCheck


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return LocalAppCheck(tmp_path_factory.mktemp("appcheck"))


@pytest.fixture
def verifier(local):
    return AppCheckVerifier(PROJECT_NUMBER, local.jwks_url)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_token_app_check_would_issue_is_accepted(local, verifier):
    verified = verifier.verify(local.mint())
    assert verified.app_id.endswith(":web:0123456789abcdef")


def _tampered(local) -> str:
    """A valid token whose payload says another app; the signature is the original's."""
    header, _, signature = local.mint().split(".")
    return ".".join([header, _b64({**local.claims(), "sub": "1:999:web:intruder"}), signature])


def _unsigned(local) -> str:
    return ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(local.claims()), ""])


def _hs256_with_the_public_key(local) -> str:
    """The algorithm confusion attack: HS256 keyed with the published public key (PEM),
    signed by hand (PyJWT itself refuses to make one)."""
    pem = local.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': local.kid})}.{_b64(local.claims())}"
    mac = hmac.new(pem, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _other_key(tmp_path) -> str:
    """Signed by a key App Check never published, under a kid it did publish."""
    stranger = LocalAppCheck(tmp_path / "stranger")
    return stranger.mint()


BAD = {
    "missing": lambda local, tmp: "",
    "expired": lambda local, tmp: local.mint(ttl_s=-3600),
    "wrong audience": lambda local, tmp: local.mint(aud=["projects/999", "projects/other"]),
    "wrong issuer": lambda local, tmp: local.mint(iss="https://evil.example/123456789012"),
    "no subject": lambda local, tmp: local.mint(sub=""),
    "no expiry": lambda local, tmp: jwt.encode(
        {k: v for k, v in local.claims().items() if k != "exp"},
        local.key,
        algorithm="RS256",
        headers={"kid": local.kid, "typ": "JWT"},
    ),  # fmt: skip
    "unsigned (alg none)": lambda local, tmp: _unsigned(local),
    "tampered": lambda local, tmp: _tampered(local),
    "HS256 keyed with the public key": lambda local, tmp: _hs256_with_the_public_key(local),
    "another key": lambda local, tmp: _other_key(tmp),
    "oversized": lambda local, tmp: local.mint(pad="x" * MAX_TOKEN_BYTES),
    "not a JWT": lambda local, tmp: "not.a.token",
    "garbage": lambda local, tmp: "\x00" * 40,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_bad_token_is_refused(case, local, verifier, tmp_path):
    with pytest.raises(Unauthenticated) as refused:
        verifier.verify(BAD[case](local, tmp_path))
    assert refused.value.status == 401
    assert "eyJ" not in refused.value.message  # the answer never echoes a token


def test_the_project_is_a_number_not_an_id():
    with pytest.raises(ValueError, match="NUMBER"):
        AppCheckVerifier("dermcam-prod")
    with pytest.raises(ValueError, match="digits"):
        load_settings({"DERMCAM_APPCHECK_PROJECT_NUMBER": "dermcam-prod"})


def test_keys_are_fetched_once_and_again_for_a_rotated_kid(tmp_path, monkeypatch):
    local = LocalAppCheck(tmp_path / "keys")
    verifier = AppCheckVerifier(PROJECT_NUMBER, local.jwks_url)
    verifier.verify(local.mint())
    local.jwks.write_text(json.dumps({"keys": []}))  # cached: the file is not read again
    verifier.verify(local.mint())
    rotated = LocalAppCheck(local.folder, kid="local-2")  # App Check rotated its key
    with pytest.raises(Unauthenticated, match="unknown key"):  # within the minute: no fetch
        verifier.verify(rotated.mint())
    monkeypatch.setattr(appcheck, "REFETCH_S", 0)  # a minute later
    assert verifier.verify(rotated.mint()).app_id


# --- the functions over HTTP -----------------------------------------------------------------


@pytest.fixture
def guarded(single_function, local, tmp_path):
    """predict with App Check on, and a model directory that does not exist: a request that
    reaches model work answers 503, one stopped at the gate 401."""
    env = {**local.env(), "DERMCAM_MODEL_DIR": str(tmp_path / "no-model")}
    url, _ = single_function("predict", env)
    return url


def test_no_token_no_model_work(guarded, lesion_png):
    answer = requests.post(
        guarded, data=lesion_png, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"


def test_a_valid_token_reaches_the_model(guarded, lesion_png, local):
    answer = requests.post(
        guarded,
        data=lesion_png,
        headers={"Content-Type": "image/png", "X-Firebase-AppCheck": local.mint()},
        timeout=30,
    )
    assert answer.status_code == 503  # past the gate: the (missing) model answered


def test_warmup_pings_need_no_app_check_token(guarded):
    answer = requests.get(guarded, params={"model": "1"}, timeout=30)
    assert answer.status_code != 401


def test_a_preflight_allows_the_app_check_header(guarded):
    answer = requests.options(
        guarded,
        headers={"Origin": "https://dermcam.example", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert "X-Firebase-AppCheck" in answer.headers["Access-Control-Allow-Headers"]


@pytest.mark.browser
def test_the_page_obtains_a_token_and_its_uploads_are_answered(
    browser, lesion_rgb, tmp_path_factory, tmp_path
):
    """make run APPCHECK=1: the page exchanges its debug token at the local App Check and
    sends the token it gets with each upload; the same upload without it is refused."""
    from conftest import encode
    from devstack import stack as devstack

    running = devstack.start(
        log_dir=tmp_path_factory.mktemp("appcheck-logs"),
        storage_root=tmp_path_factory.mktemp("appcheck-storage"),
        appcheck=True,
    )
    try:
        photo = tmp_path / "lesion.jpg"
        photo.write_bytes(encode(lesion_rgb.resize((600, 450)), "JPEG"))
        refused = requests.post(
            running.predict_url, files={"image": photo.read_bytes()}, timeout=30
        )
        assert refused.status_code == 401
        context = browser.new_context()
        page = context.new_page()
        sent = []
        page.on(
            "request",
            lambda r: (
                r.method == "POST"
                and r.url.startswith((running.predict_url, running.gradcam_url))
                and sent.append(r.headers.get("x-firebase-appcheck"))
            ),
        )
        page.goto(running.page_url + "/")
        page.set_input_files("#file-input", str(photo))
        page.locator("#predictions li").first.wait_for(timeout=30_000)
        assert sent and all(token and token.count(".") == 2 for token in sent)
        context.close()
    finally:
        running.stop()


@pytest.fixture
def cloud_appcheck(tmp_path):
    """The local cloud's App Check API (devstack.cloudappcheck) over HTTP."""
    from devstack import cloudappcheck, localcloud

    cloud = localcloud.Cloud(tmp_path / "cloud", storage_url="http://127.0.0.1:1")
    cloudappcheck.install(cloud)
    server = localcloud.serve(cloud)
    yield f"{cloud.url}/{cloudappcheck.API}"
    server.shutdown()


def test_the_local_cloud_exchanges_only_a_registered_debug_token(cloud_appcheck):
    """make deploy-local --appcheck: a team registers a debug token for its web app, the page
    exchanges it, and a function verifying against the cloud's key set accepts the token."""
    import uuid

    number, app = "424242424242", "1:424242424242:web:abc"
    apps = f"{cloud_appcheck}/v1/projects/{number}/apps/{app}"
    debug = str(uuid.uuid4())

    def exchange(token: str, key: str | None = "browser-key") -> requests.Response:
        params = {"key": key} if key else {}
        return requests.post(
            f"{apps}:exchangeDebugToken", params=params, json={"debugToken": token}, timeout=10
        )

    assert exchange(debug).status_code == 403  # not registered yet
    bad = requests.post(
        f"{apps}/debugTokens", json={"displayName": "ci", "token": "not-a-uuid"}, timeout=10
    )
    assert bad.status_code == 400
    made = requests.post(
        f"{apps}/debugTokens", json={"displayName": "ci", "token": debug}, timeout=10
    )
    assert made.status_code == 200 and "token" not in made.json()  # input only
    assert exchange(debug, key=None).status_code == 403  # the web app's API key is needed
    assert exchange(str(uuid.uuid4())).status_code == 403
    answer = exchange(debug)
    assert answer.status_code == 200 and answer.json()["ttl"] == "3600s"
    assert answer.headers["Access-Control-Allow-Origin"] == "*"  # the page's origin differs
    verified = AppCheckVerifier(number, f"{cloud_appcheck}/v1/jwks").verify(answer.json()["token"])
    assert verified.app_id == app
    with pytest.raises(Unauthenticated):  # another project's functions refuse it
        AppCheckVerifier("111111111111", f"{cloud_appcheck}/v1/jwks").verify(answer.json()["token"])
    recaptcha = requests.post(f"{apps}:exchangeRecaptchaEnterpriseToken", json={}, timeout=10)
    assert recaptcha.status_code == 400 and "not emulated" in recaptcha.json()["error"]["message"]
