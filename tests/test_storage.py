"""Storage module: object keys, and cloud signing through IAM without a key file.

Google Cloud cannot run here, so only its two edges are replaced: the default credentials
and the IAM signBlob call. The URL building around them is the real library's."""

from __future__ import annotations

import base64
import datetime as dt
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from google.auth import credentials as ga_credentials

from dermcam.config import Settings
from dermcam.storage import (
    GRID_METADATA_LIMIT,
    HeatmapStore,
    decode_grid,
    encode_grid,
    grid_metadata,
    heatmap_key,
)

SHA = "ab" * 32


def test_keys_come_from_validated_values_only():
    assert heatmap_key("demo", "1", "gradcam++", 4, SHA) == f"heatmaps/demo/1/gradcampp/4/{SHA}.png"
    with pytest.raises(ValueError):
        heatmap_key("demo", "1", "gradcam", 4, "../../etc/passwd")
    with pytest.raises(ValueError):
        heatmap_key("demo", "1", "../x", 4, SHA)


def test_grid_metadata_keeps_four_decimals_exactly_and_compactly():
    grid = np.round(np.random.default_rng(0).random((16, 16)), 4)
    grid[3, 4], grid[5, 6] = 0.0, 1.0
    encoded = encode_grid(grid)
    assert len(encoded) < 700  # 2 bytes a cell; as JSON float32 values it was 4.8 KB
    assert np.array_equal(decode_grid(encoded), grid)
    assert decode_grid(encoded).tolist() == grid.tolist()  # same floats in the JSON answer
    metadata = grid_metadata(grid, {"method": "gradcam", "class": 3})
    assert metadata == {"grid": encoded, "method": '"gradcam"', "class": "3"}


def test_a_map_too_large_for_metadata_is_not_kept():
    side = int((GRID_METADATA_LIMIT * 3 / 4 / 2) ** 0.5) + 2
    assert "grid" not in grid_metadata(np.zeros((side, side)), {"class": 1})


@pytest.mark.parametrize(
    "text", ["", "16x16", "16x16:!!!", "4x4:" + base64.b64encode(b"\0" * 8).decode(), "[[0.1]]"]
)
def test_unreadable_grid_metadata_is_a_value_error(text):
    with pytest.raises(ValueError):
        decode_grid(text)


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
