"""Firebase App Check for the local cloud: the part of its REST API a deployment with
`deploy.sh --appcheck` meets. The functions fetch the key set (GET /v1/jwks, what
`DERMCAM_APPCHECK_JWKS_URL` points at), a team registers a debug token for its web app (POST
.../apps/{app}/debugTokens, as the Firebase console does; the token is input only, never
answered back) and the page exchanges it for an App Check token (POST
.../apps/{app}:exchangeDebugToken?key=API_KEY, as the JS SDK does under
`self.FIREBASE_APPCHECK_DEBUG_TOKEN`). reCAPTCHA Enterprise is Google's and is not emulated:
its exchange is refused with a message saying so. Tokens are signed with the local cloud's own
key (devstack.appcheck.LocalAppCheck), issuer and audience from the project in the path."""

from __future__ import annotations

import json
import re
import secrets
import uuid

from dermcam.appcheck import ISSUER
from devstack.appcheck import TTL_S, LocalAppCheck
from devstack.localcloud import Cloud, CloudError, Request, Response

API = "firebaseappcheck"
APP = r"/v1/projects/(?P<project>[^/]+)/apps/(?P<app>[^/]+?)"
# The page calls the exchange from its own origin (the page bucket): a CORS request.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
}


def install(cloud: Cloud) -> None:
    # A key of this run's own; the kid says which, so a function that cached an earlier
    # run's key fetches this one instead of failing the signature.
    issuer = LocalAppCheck(cloud.state_dir / "appcheck", kid=f"local-{secrets.token_hex(4)}")

    def answer(status: int, body: dict) -> Response:
        return Response(status, body, dict(CORS))

    @cloud.route(API, "OPTIONS", r"/.*")
    def preflight(request: Request, m: re.Match) -> Response:
        return Response(204, b"", dict(CORS))

    @cloud.route(API, "GET", r"/v1/jwks")
    def jwks(request: Request, m: re.Match) -> Response:
        return answer(200, json.loads(issuer.jwks.read_text()))

    @cloud.route(API, "POST", APP + r"/debugTokens")
    def register(request: Request, m: re.Match) -> Response:
        body = request.json()
        token = str(body.get("token", ""))
        try:
            valid = uuid.UUID(token).version == 4
        except ValueError:
            valid = False
        if not valid or not body.get("displayName"):
            raise CloudError(400, "A debug token needs a displayName and a UUID4 token.")
        name = f"projects/{m['project']}/apps/{m['app']}/debugTokens/{uuid.uuid4().hex}"
        cloud.put("appcheck-debug-tokens", name, {"app": m["app"], "token": token.lower()})
        return answer(200, {"name": name, "displayName": body["displayName"]})

    @cloud.route(API, "POST", APP + r":exchangeDebugToken")
    def exchange(request: Request, m: re.Match) -> Response:
        if not request.query.get("key"):
            return answer(403, CloudError(403, "The request is missing a valid API key.").body())
        offered = str(request.json().get("debugToken", "")).lower()
        registered = cloud.kind("appcheck-debug-tokens").values()
        if not any(t["app"] == m["app"] and t["token"] == offered for t in registered):
            return answer(403, CloudError(403, "App attestation failed.").body())
        project = m["project"]
        token = issuer.mint(
            TTL_S, sub=m["app"], iss=f"{ISSUER}{project}", aud=[f"projects/{project}"]
        )
        return answer(200, {"token": token, "ttl": f"{TTL_S}s"})

    @cloud.route(API, "POST", APP + r":exchangeRecaptchaEnterpriseToken")
    def recaptcha(request: Request, m: re.Match) -> Response:
        message = (
            "reCAPTCHA Enterprise is Google's and is not emulated by the local cloud: register a "
            "debug token for the app and set self.FIREBASE_APPCHECK_DEBUG_TOKEN in the page."
        )
        return answer(400, CloudError(400, message).body())
