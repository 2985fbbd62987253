"""Firebase App Check tokens, verified in the function (a plain HTTP function gets no help
from the platform): the page attests itself (reCAPTCHA Enterprise) to App Check, which signs
a short-lived JWT; the page sends it as `X-Firebase-AppCheck` and each POST is refused with
401 unless its token is one App Check signed for this project, and unexpired.

The checks are those of the Admin SDK's `app_check.verify_token`: RS256 only, header `typ`
JWT, the signing key from App Check's published JWKS by `kid`, issuer
`https://firebaseappcheck.googleapis.com/<project number>`, audience containing
`projects/<project number>`, `exp` in the future (60 s of clock skew), a subject (the app).
Keys are cached for 6 hours (what App Check asks) and fetched again for a `kid` not yet seen
(a rotation), at most once a minute. `DERMCAM_APPCHECK_JWKS_URL` points verification at
another key set — a `file:` URL or a local server of the offline rehearsal
(`devstack/appcheck.py`), never the network in tests. PyJWT (with `cryptography`) does the
signature and claims; it is imported only when App Check is on.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dermcam.errors import Unauthenticated

HEADER = "X-Firebase-AppCheck"
ISSUER = "https://firebaseappcheck.googleapis.com/"
JWKS_URL = "https://firebaseappcheck.googleapis.com/v1/jwks"
KEY_LIFESPAN_S = 21600
REFETCH_S = 60
FETCH_TIMEOUT_S = 5
MAX_JWKS_BYTES = 1 << 20
MAX_TOKEN_BYTES = 4096  # App Check tokens are ~900 bytes; a larger one is not parsed at all
LEEWAY_S = 60


@dataclass(frozen=True)
class Verified:
    app_id: str  # the token's subject: which registered app obtained it
    expires: int


class AppCheckVerifier:
    """Verifies tokens for one project, its key set fetched lazily and cached."""

    def __init__(self, project_number: str, jwks_url: str = JWKS_URL) -> None:
        if not project_number.strip().isdigit():
            raise ValueError("App Check needs the project NUMBER (digits), not its id")
        if urlparse(jwks_url).scheme not in ("https", "http", "file"):
            raise ValueError(
                f"the App Check key set must be an https, http or file URL: {jwks_url}"
            )
        self.project_number = project_number.strip()
        self.jwks_url = jwks_url
        self._set: dict = {}
        self._fetched = -float("inf")
        self._lock = threading.Lock()

    def _key(self, kid: str):  # noqa: ANN202 - a jwt.PyJWK
        """The signing key `kid`, from the cached set; an unknown kid fetches the set again,
        at most once a minute (a flood of made-up kids must not become a flood of fetches)."""
        import jwt

        with self._lock:
            now = time.monotonic()
            stale = now - self._fetched > KEY_LIFESPAN_S
            if stale or (kid not in self._set and now - self._fetched > REFETCH_S):
                self._set = {k.key_id: k for k in jwt.PyJWKSet.from_json(self._fetch()).keys}
                self._fetched = now
            if kid not in self._set:
                raise Unauthenticated("The App Check token was signed by an unknown key.")
            return self._set[kid]

    def _fetch(self) -> str:
        try:
            if self.jwks_url.startswith("file:"):  # the offline rehearsal's key set
                return Path(urllib.request.url2pathname(urlparse(self.jwks_url).path)).read_text()
            # http(s) only, checked in __init__
            with urllib.request.urlopen(self.jwks_url, timeout=FETCH_TIMEOUT_S) as answer:  # noqa: S310
                return answer.read(MAX_JWKS_BYTES).decode()
        except (OSError, ValueError) as exc:
            raise Unauthenticated("App Check's keys could not be fetched; try again.") from exc

    def verify(self, token: str | None) -> Verified:
        """The token's app, or Unauthenticated saying why (never the token itself)."""
        import jwt

        if not token:
            raise Unauthenticated(f"This function needs an App Check token ({HEADER}).")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("The App Check token is too large to be one.")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "RS256" or header.get("typ") != "JWT":
                raise Unauthenticated("The App Check token is not an RS256 JWT.")
            key = self._key(str(header.get("kid")))
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=f"projects/{self.project_number}",
                issuer=f"{ISSUER}{self.project_number}",
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The App Check token has expired.") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("The App Check token is for another project.") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("The App Check token was not issued by App Check.") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthenticated("The App Check token is not valid.") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("The App Check token names no app.")
        return Verified(subject, int(claims["exp"]))


def verifier_from(settings: Any) -> AppCheckVerifier | None:  # noqa: ANN401 - config.Settings
    """The verifier the settings ask for, or None when App Check is off."""
    if not settings.appcheck_project_number:
        return None
    return AppCheckVerifier(settings.appcheck_project_number, settings.appcheck_jwks_url)
