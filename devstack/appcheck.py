"""A local App Check for the offline rehearsal and the tests: a key pair of our own, its
public half published as a JWKS file (what `DERMCAM_APPCHECK_JWKS_URL` points at), and
tokens minted with the private half exactly as App Check shapes them (RS256, `typ` JWT,
`kid`; issuer and audience from the project number, the app as subject); and, run as
`python -m devstack.appcheck`, a server of App Check's REST surface (the key set, the debug
token exchange) for the page under `make run APPCHECK=1`. Nothing here reaches the network,
and nothing of it is deployed."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from dermcam.appcheck import ISSUER
from devstack.local_http import serve

PROJECT_NUMBER = "123456789012"
PROJECT_ID = "dermcam-local"
APP_ID = f"1:{PROJECT_NUMBER}:web:0123456789abcdef"
TTL_S = 3600
EXCHANGE = re.compile(r"/v1/projects/(?P<project>[^/]+)/apps/(?P<app>[^/]+):exchangeDebugToken")


class LocalAppCheck:
    def __init__(self, folder: Path, project_number: str = PROJECT_NUMBER, kid: str = "local-1"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.project_number = project_number
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": kid, "alg": "RS256", "use": "sig"})
        self.jwks = self.folder / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [public]}))

    @property
    def jwks_url(self) -> str:
        return self.jwks.resolve().as_uri()

    def env(self) -> dict[str, str]:
        """The settings a function verifies this App Check's tokens with."""
        return {
            "DERMCAM_APPCHECK_PROJECT_NUMBER": self.project_number,
            "DERMCAM_APPCHECK_JWKS_URL": self.jwks_url,
        }

    def claims(self, ttl_s: int = 3600, app_id: str = APP_ID) -> dict:
        now = int(time.time())
        return {
            "iss": f"{ISSUER}{self.project_number}",
            "aud": [f"projects/{self.project_number}", f"projects/{PROJECT_ID}"],
            "sub": app_id,
            "iat": now,
            "exp": now + ttl_s,
        }

    def mint(self, ttl_s: int = 3600, **changes: object) -> str:
        """A token as App Check would issue it; `changes` replace claims (tests)."""
        return jwt.encode(
            {**self.claims(ttl_s), **changes},
            self.key,
            algorithm="RS256",
            headers={"kid": self.kid, "typ": "JWT"},
        )


class ExchangeHandler(BaseHTTPRequestHandler):
    """App Check's REST surface as the page and the functions use it: GET /v1/jwks, and
    POST /v1/projects/{project}/apps/{app}:exchangeDebugToken {"debugToken"} → {"token",
    "ttl"} for the one debug token registered (as a Firebase console registers it)."""

    app_check: LocalAppCheck
    debug_token: str

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")  # the page is on another port
        self.end_headers()
        self.wfile.write(data)

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if urlparse(self.path).path == "/v1/jwks":
            self._answer(200, json.loads(self.app_check.jwks.read_text()))
        else:
            self._answer(404, {"error": {"code": 404, "message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802
        match = EXCHANGE.fullmatch(urlparse(self.path).path)
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        if not match:
            self._answer(404, {"error": {"code": 404, "message": "not found"}})
        elif body.get("debugToken") != self.debug_token:
            self._answer(403, {"error": {"code": 403, "message": "App attestation failed."}})
        else:
            token = self.app_check.mint(TTL_S, sub=match.group("app"))
            self._answer(200, {"token": token, "ttl": f"{TTL_S}s"})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write("appcheck: " + (format % args) + "\n")


def page_config(url: str, debug_token: str) -> dict:
    """What the page's config.js carries to obtain tokens from this App Check."""
    return {
        "exchangeUrl": url,
        "projectNumber": PROJECT_NUMBER,
        "appId": APP_ID,
        "apiKey": "local",
        "debugToken": debug_token,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.appcheck")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", required=True, help="where the key set is written")
    parser.add_argument("--debug-token", required=True)
    args = parser.parse_args(argv)
    handler = type(
        "Handler",
        (ExchangeHandler,),
        {"app_check": LocalAppCheck(Path(args.folder)), "debug_token": args.debug_token},
    )
    return serve(handler, args.port)


if __name__ == "__main__":
    sys.exit(main())
