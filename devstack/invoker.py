"""Who may call a function in the local cloud: Cloud Run's invoker check, with local ID tokens.

A gen2 function's URL answers only callers its Cloud Run service's policy lets in: anyone when
`roles/run.invoker` has `allUsers`, otherwise a request carrying an ID token (`Authorization:
Bearer ...`) for a member of that role whose audience is the function's URL; everyone else
gets 403, as from Cloud Run. There is no Google here to sign tokens, so the local cloud mints
unsigned ones (the local scheduler does, for a job's OIDC account and audience); only this
module reads them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

INVOKER = "roles/run.invoker"
PREFIX = "local-id-token."


def id_token(email: str, audience: str) -> str:
    """A local stand-in for the ID token Google would mint for `email` and `audience`."""
    claims = json.dumps({"email": email, "aud": audience}).encode()
    return PREFIX + base64.urlsafe_b64encode(claims).decode()


def _claims(headers: Mapping[str, str]) -> dict | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.startswith(PREFIX):
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token[len(PREFIX) :]))
    except (ValueError, TypeError):
        return None


def allowed(policy: Mapping | None, url: str, headers: Mapping[str, str]) -> bool:
    """Whether Cloud Run would let this request through to the service at `url`."""
    members = {
        member
        for binding in (policy or {}).get("bindings", [])
        if binding.get("role") == INVOKER
        for member in binding.get("members", [])
    }
    if "allUsers" in members:
        return True
    claims = _claims(headers)
    if not claims or claims.get("aud", "").rstrip("/") != url.rstrip("/"):
        return False
    return "allAuthenticatedUsers" in members or f"serviceAccount:{claims.get('email')}" in members
