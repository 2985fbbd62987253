"""A local App Check for the offline rehearsal and the tests: a key pair of our own, its
public half published as a JWKS file (what `DERMCAM_APPCHECK_JWKS_URL` points at), and
tokens minted with the private half exactly as App Check shapes them (RS256, `typ` JWT,
`kid`; issuer and audience from the project number, the app as subject). Nothing here
reaches the network, and nothing of it is deployed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from dermcam.appcheck import ISSUER

PROJECT_NUMBER = "123456789012"
PROJECT_ID = "dermcam-local"
APP_ID = f"1:{PROJECT_NUMBER}:web:0123456789abcdef"


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
