"""Environment → one frozen settings object. Defaults serve the demo model locally."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent


def _default_model_dir() -> str:
    # Staged for the cloud: the model sits beside the package (build/<fn>/model).
    # In the repository: model_store/models/demo/1.
    staged = _PACKAGE_DIR.parent / "model"
    if staged.is_dir():
        return str(staged)
    return str(_PACKAGE_DIR.parents[1] / "model_store" / "models" / "demo" / "1")


@dataclass(frozen=True)
class Settings:
    model_dir: str = field(default_factory=_default_model_dir)
    bucket: str = "dermcam-heatmaps"
    signed_url_ttl: int = 900
    allowed_origins: tuple[str, ...] = ("*",)
    max_upload_mb: float = 10.0
    max_pixels: int = 50_000_000
    num_threads: int = 1
    engine: str = "litert"
    storage_emulator_host: str | None = None
    storage_timeout_s: float = 5.0
    storage_backoff_s: float = 30.0
    # "enforce": a photograph out of scope is declined (422). "measure": screened and logged
    # (would_abstain) but answered: for load tests such as the fit check, whose photographs
    # are not the model's, and for comparing served answers over a whole archive.
    scope: str = "enforce"
    # Abuse bounds of a public deployment (deploy.sh --public sets them; off by default, so
    # make run, the fit check and the benches send what they like).
    # App Check: on when the Firebase project NUMBER is set; keys from App Check's JWKS.
    appcheck_project_number: str = ""
    appcheck_jwks_url: str = "https://firebaseappcheck.googleapis.com/v1/jwks"
    # Requests a minute per client address and function, per instance (0: no limit).
    rate_limit_per_minute: int = 0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _number(env: dict[str, str], name: str, default: float, cast: type = int) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a {cast.__name__}, got {raw!r}") from exc


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read DERMCAM_* (and STORAGE_EMULATOR_HOST) from `env` (default: os.environ)."""
    env = dict(os.environ if env is None else env)
    defaults = Settings()
    origins = env.get("DERMCAM_ALLOWED_ORIGINS", "*")
    engine = env.get("DERMCAM_ENGINE", defaults.engine).strip().lower()
    if engine not in ("litert", "keras"):
        raise ValueError(f"DERMCAM_ENGINE must be 'litert' or 'keras', got {engine!r}")
    scope = env.get("DERMCAM_SCOPE", defaults.scope).strip().lower()
    if scope not in ("enforce", "measure"):
        raise ValueError(f"DERMCAM_SCOPE must be 'enforce' or 'measure', got {scope!r}")
    number = env.get("DERMCAM_APPCHECK_PROJECT_NUMBER", "").strip()
    if number and not number.isdigit():
        raise ValueError(
            f"DERMCAM_APPCHECK_PROJECT_NUMBER must be the project number (digits), got {number!r}"
        )
    return Settings(
        model_dir=env.get("DERMCAM_MODEL_DIR") or defaults.model_dir,
        bucket=env.get("DERMCAM_BUCKET") or defaults.bucket,
        signed_url_ttl=_number(env, "DERMCAM_SIGNED_URL_TTL", defaults.signed_url_ttl),
        allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
        max_upload_mb=_number(env, "DERMCAM_MAX_UPLOAD_MB", defaults.max_upload_mb, float),
        max_pixels=_number(env, "DERMCAM_MAX_PIXELS", defaults.max_pixels),
        num_threads=max(1, _number(env, "DERMCAM_NUM_THREADS", defaults.num_threads)),
        engine=engine,
        scope=scope,
        appcheck_project_number=env.get("DERMCAM_APPCHECK_PROJECT_NUMBER", "").strip(),
        appcheck_jwks_url=env.get("DERMCAM_APPCHECK_JWKS_URL") or defaults.appcheck_jwks_url,
        rate_limit_per_minute=max(
            0, _number(env, "DERMCAM_RATE_LIMIT_PER_MINUTE", defaults.rate_limit_per_minute)
        ),
        storage_emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
        storage_timeout_s=_number(
            env, "DERMCAM_STORAGE_TIMEOUT_S", defaults.storage_timeout_s, float
        ),
        storage_backoff_s=_number(
            env, "DERMCAM_STORAGE_BACKOFF_S", defaults.storage_backoff_s, float
        ),
    )
