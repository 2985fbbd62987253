"""What a request must pass before any work is done for it: the client's rate limit, then
(for a POST, the only request that runs the model on an input) a valid App Check token.
GET ?warmup=1 and ?model=1 take no input and do bounded work (load the model once per
instance, describe it), so Cloud Scheduler's warmup pings, which carry an OIDC token and no
App Check token, keep working; they are still counted by the rate limit."""

from __future__ import annotations

import flask

from dermcam.appcheck import HEADER, AppCheckVerifier, verifier_from
from dermcam.config import Settings
from dermcam.ratelimit import RateLimiter, client_of


class Gate:
    """One per function instance: its limiter's counters and its verifier's cached keys."""

    def __init__(self, settings: Settings) -> None:
        self.verifier: AppCheckVerifier | None = verifier_from(settings)
        per_minute = settings.rate_limit_per_minute
        self.limiter = RateLimiter(per_minute) if per_minute else None

    def check(self, request: flask.Request) -> dict[str, str]:
        """Raises RateLimited or Unauthenticated; else the fields to log (never the token)."""
        if self.limiter is not None:
            self.limiter.allow(
                client_of(request.headers.get("X-Forwarded-For"), request.remote_addr)
            )
        if self.verifier is None or request.method != "POST":
            return {}
        verified = self.verifier.verify(request.headers.get(HEADER))
        return {"appcheck_app": verified.app_id}
