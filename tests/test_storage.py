"""Storage module: object keys, and cloud signing through IAM without a key file.

Google Cloud cannot run here, so only its two edges are replaced: the default credentials
and the IAM signBlob call. The URL building around them is the real library's."""

from __future__ import annotations

import base64
import datetime as dt
from urllib.parse import parse_qs, urlparse

import pytest
from google.auth import credentials as ga_credentials

from dermcam.config import Settings
from dermcam.storage import HeatmapStore, heatmap_key

SHA = "ab" * 32


def test_keys_come_from_validated_values_only():
    assert heatmap_key("demo", "1", "gradcam++", 4, SHA) == f"heatmaps/demo/1/gradcampp/4/{SHA}.png"
    with pytest.raises(ValueError):
        heatmap_key("demo", "1", "gradcam", 4, "../../etc/passwd")
    with pytest.raises(KeyError):
        heatmap_key("demo", "1", "../x", 4, SHA)


class FunctionIdentity(ga_credentials.Credentials):
    """What google.auth.default() gives a Cloud Function: a token, no private key."""

    def __init__(self) -> None:
        super().__init__()
        self.service_account_email = "dermcam-gradcam@proj.iam.gserviceaccount.com"
        self.refreshes = 0

    def refresh(self, request) -> None:  # noqa: ANN001
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)


def test_cloud_urls_are_signed_through_iam(monkeypatch):
    identity = FunctionIdentity()
    monkeypatch.setattr("google.auth.default", lambda scopes=None, **_: (identity, "proj"))
    signed = []

    def sign_blob(message, access_token, service_account_email, universe_domain=None):  # noqa: ANN001
        signed.append((access_token, service_account_email))
        return base64.b64encode(b"\x01" * 256).decode()

    monkeypatch.setattr("google.cloud.storage._signing._sign_message", sign_blob)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    store = HeatmapStore(Settings(bucket="heatmaps-bucket", signed_url_ttl=600))
    blob = store._bucket().blob(f"heatmaps/demo/1/gradcam/4/{SHA}.png")

    for _ in range(2):
        url = store._sign(blob, dt.timedelta(seconds=600))
        parts = urlparse(url)
        query = parse_qs(parts.query)
        assert parts.netloc == "storage.googleapis.com"
        assert parts.path == f"/heatmaps-bucket/heatmaps/demo/1/gradcam/4/{SHA}.png"
        assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
        assert query["X-Goog-Expires"] == ["600"]
        assert query["X-Goog-Credential"][0].startswith(identity.service_account_email)
        assert query["X-Goog-Signature"] == ["01" * 256]
    assert signed == [("token-1", identity.service_account_email)] * 2
    assert identity.refreshes == 1  # refreshed once, then reused while valid
