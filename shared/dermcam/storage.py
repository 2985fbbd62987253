"""Heatmaps in Cloud Storage: content-addressed keys, short timeouts, signed URLs.

The same google-cloud-storage code path runs against the cloud and against the local
emulator (STORAGE_EMULATOR_HOST). In the cloud, URLs are V4-signed through IAM signBlob with
the function's own identity (no key file); under the emulator, with a throwaway local key.
A failing store never fails a request: callers fall back to an inline heatmap.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dermcam import telemetry
from dermcam.config import Settings

PREFIX = "heatmaps"


class StorageUnavailable(RuntimeError):
    """Storage could not be reached or refused the call; the message says why."""


@dataclass(frozen=True)
class StoredObject:
    object: str  # gs://bucket/key
    url: str
    expires_at: str
    metadata: dict[str, str]


_INPUT_KEY = re.compile(r"^[0-9a-f]{64}(-m[0-9a-f]{12})?$")


def heatmap_key(model: str, version: str, method: str, class_index: int, input_key: str) -> str:
    """Object key from validated values only: never from a user's string. `input_key` is the
    image's sha256, with `-m<digest>` of the encoded metadata for models that take any."""
    if not _INPUT_KEY.match(input_key):
        raise ValueError("input key must be a sha256, optionally with a metadata digest")
    if not re.fullmatch(r"[a-z+-]+", method):
        raise ValueError("method must be a CAM method's name")
    slug = method.replace("+", "p")  # gradcam++ → gradcampp
    return f"{PREFIX}/{model}/{version}/{slug}/{int(class_index)}/{input_key}.png"


def _local_signer() -> Any:
    """A throwaway service-account key for signing URLs the emulator serves."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    # The emulator checks no signature: 1024 bits keep the key's generation at ~5 ms of a
    # cold start instead of ~40 (measured); never used against the cloud.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "local",
            "private_key_id": "local",
            "private_key": pem,
            "client_email": "dermcam-local@local.iam.gserviceaccount.com",
            "client_id": "0",
            "token_uri": "http://127.0.0.1/unused",
        }
    )


class HeatmapStore:
    """One storage client per instance, created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._client = None
        self._signer = None
        self._down_until = 0.0

    @property
    def emulated(self) -> bool:
        return bool(self.settings.storage_emulator_host)

    @property
    def ready(self) -> bool:
        """Whether the client exists: until then a call first pays for importing
        google-cloud-storage and making the client (~0.4 s of CPU, measured)."""
        return self._client is not None

    def prepare(self) -> bool:
        """Make the client now (warmups, so a later request does not pay for it). A failure
        is logged, not raised: the next call tries again."""
        try:
            self._bucket()
            return True
        except self._errors() as exc:
            telemetry.log("WARNING", "storage client not made", error=str(exc)[:200])
            return False

    def prepare_then(self, work: Callable[[], None]) -> Callable[[], None]:
        """A task for after a cold instance's first answer: make the client, then `work`,
        on a thread of its own; failures are logged, the next request retries."""

        def start() -> None:
            def run() -> None:
                try:
                    if self.prepare():
                        work()
                except StorageUnavailable as exc:
                    telemetry.log("WARNING", "deferred heatmap store failed", error=str(exc)[:200])

            threading.Thread(target=run, name="storage-prepare", daemon=True).start()

        return start

    def _call_options(self) -> dict[str, Any]:
        from google.api_core.retry import Retry

        deadline = self.settings.storage_timeout_s
        return {
            "timeout": (2.0, max(1.0, deadline - 2.0)),
            "retry": Retry(initial=0.2, maximum=1.0, timeout=deadline),
        }

    def _bucket(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import storage

                if self.emulated:
                    from google.auth.credentials import AnonymousCredentials

                    self._client = storage.Client(
                        project="local", credentials=AnonymousCredentials()
                    )
                    self._signer = _local_signer()
                else:
                    self._client = storage.Client()
            return self._client.bucket(self.settings.bucket)

    def _guard(self) -> None:
        if time.monotonic() < self._down_until:
            raise StorageUnavailable("storage failed moments ago; skipping it for a while")

    def _failed(self, what: str, exc: BaseException) -> StorageUnavailable:
        # Skip storage for a while, so requests behind a dead store answer fast, inline.
        self._down_until = time.monotonic() + self.settings.storage_backoff_s
        return StorageUnavailable(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")

    def _errors(self) -> tuple[type[BaseException], ...]:
        import requests
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        return (
            api_exceptions.GoogleAPIError,
            auth_exceptions.GoogleAuthError,
            requests.exceptions.RequestException,
            OSError,
        )

    def find(self, key: str) -> StoredObject | None:
        """The stored heatmap with a fresh signed URL, or None when it is not there."""
        self._guard()
        try:
            blob = self._bucket().get_blob(key, **self._call_options())
            if blob is None:
                return None
            return self._describe(blob)
        except self._errors() as exc:
            raise self._failed("looking up the heatmap failed", exc) from exc

    def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> StoredObject:
        """Upload (private object) and sign a URL for it."""
        self._guard()
        try:
            blob = self._bucket().blob(key)
            blob.metadata = metadata or {}
            blob.cache_control = "private, max-age=3600"
            blob.upload_from_string(data, content_type=content_type, **self._call_options())
            return self._describe(blob)
        except self._errors() as exc:
            raise self._failed("storing the heatmap failed", exc) from exc

    def _describe(self, blob: Any) -> StoredObject:
        ttl = dt.timedelta(seconds=self.settings.signed_url_ttl)
        expires = dt.datetime.now(dt.UTC) + ttl
        return StoredObject(
            object=f"gs://{self.settings.bucket}/{blob.name}",
            url=self._sign(blob, ttl),
            expires_at=expires.isoformat(timespec="seconds"),
            metadata=dict(blob.metadata or {}),
        )

    def _sign(self, blob: Any, ttl: dt.timedelta) -> str:
        if self.emulated:
            return blob.generate_signed_url(
                version="v4",
                expiration=ttl,
                method="GET",
                credentials=self._signer,
                api_access_endpoint=self.settings.storage_emulator_host,
            )
        # Cloud: no key file. Sign through IAM with the function's own service account.
        import google.auth
        import google.auth.transport.requests

        with self._lock:
            if self._signer is None:
                self._signer, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            if not self._signer.valid:
                self._signer.refresh(google.auth.transport.requests.Request())
            email, token = self._signer.service_account_email, self._signer.token
        return blob.generate_signed_url(
            version="v4",
            expiration=ttl,
            method="GET",
            service_account_email=email,
            access_token=token,
        )


GRID_DECIMALS = 4  # what the API answers; stored exactly
_GRID_SCALE = 10**GRID_DECIMALS
# Cloud Storage allows 8 KiB of custom metadata per object, and fake-gcs-server's filesystem
# backend keeps it in one extended attribute (about 3 KB on ext4). A larger map is not kept:
# the heatmap is still stored, and a repeat recomputes the map.
GRID_METADATA_LIMIT = 2048


def encode_grid(grid: np.ndarray) -> str:
    """'HxW:' + base64 of little-endian uint16 cells = round(value × 10⁴): 2 bytes a cell,
    the API's 4 decimals exactly (as JSON float32 values, a 16×16 map took 4.8 KB)."""
    height, width = grid.shape
    cells = np.rint(np.clip(grid, 0.0, 1.0) * _GRID_SCALE).astype("<u2")
    return f"{height}x{width}:" + base64.b64encode(cells.tobytes()).decode("ascii")


def decode_grid(text: str) -> np.ndarray:
    """The float64 map `encode_grid` wrote; ValueError for anything else."""
    shape, _, data = text.partition(":")
    height, width = (int(n) for n in shape.split("x"))
    cells = np.frombuffer(base64.b64decode(data, validate=True), "<u2")
    return cells.reshape(height, width) / _GRID_SCALE


def grid_metadata(grid: np.ndarray, extra: dict[str, Any]) -> dict[str, str]:
    """Custom metadata stored with a heatmap so a cached answer needs no recomputation."""
    metadata = {k: json.dumps(v, separators=(",", ":")) for k, v in extra.items()}
    encoded = encode_grid(grid)
    if len(encoded) <= GRID_METADATA_LIMIT:
        metadata["grid"] = encoded
    return metadata
