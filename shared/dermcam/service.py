"""The path of one request, top to bottom:
bytes → image → named inputs (tensor, metadata) → engine → (probs, A, grads) → cam → PNG →
storage → JSON."""

from __future__ import annotations

import base64
import functools
import time
from typing import Any

import numpy as np

from dermcam import cam, imaging, render, telemetry, trust
from dermcam.cache import ModelCache
from dermcam.config import Settings
from dermcam.engine import pooled
from dermcam.errors import UnknownMethod, UnknownTarget
from dermcam.http import ImageRequest
from dermcam.inputs import image_input, model_inputs
from dermcam.manifest import Manifest
from dermcam.storage import (
    GRID_DECIMALS,
    HeatmapStore,
    StorageUnavailable,
    StoredObject,
    decode_grid,
    grid_metadata,
    heatmap_key,
)

COLD_STORAGE = "the storage client is made after this instance's first answer"


class Timer:
    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[f"{name}_ms"] = round((now - self.last) * 1000, 1)
        self.last = now

    def summary(self) -> dict[str, float]:
        return {**self.marks, "total_ms": round((time.perf_counter() - self.started) * 1000, 1)}


def resolve_class(spec: Any, manifest: Manifest) -> int:
    """A class given as an index (int or digits) or a code; never used to build a path."""
    classes = len(manifest.labels)
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        if 0 <= index < classes:
            return index
        raise UnknownTarget(f"Class index {index} is out of range 0..{classes - 1}.")
    if isinstance(spec, str) and spec.strip() in manifest.codes:
        return manifest.codes.index(spec.strip())
    raise UnknownTarget(
        f"Unknown class; use an index 0..{classes - 1} or one of: {', '.join(manifest.codes)}."
    )


def resolve_method(spec: Any) -> str:
    method = "gradcam" if spec in (None, "") else spec
    if method not in cam.METHODS:
        raise UnknownMethod(f"Unknown method; use one of: {', '.join(cam.METHODS)}.")
    return method


def ranked(
    manifest: Manifest, probs: np.ndarray, raw: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Every class, most probable first; with `raw`, the model's own uncalibrated value too."""
    order = np.argsort(-probs, kind="stable")
    return [
        {
            "index": int(i),
            "code": manifest.labels[i].code,
            "name": manifest.labels[i].name,
            "probability": round(float(probs[i]), 6),
        }
        | ({"raw_probability": round(float(raw[i]), 6)} if raw is not None else {})
        for i in order
    ]


def claims(manifest: Manifest, raw: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The served probabilities (calibrated when the manifest has a trust block) and the
    answer's fields about them: predictions, top, calibrated, decision, prediction_set."""
    assessed = trust.assess(manifest.trust, raw, manifest.codes)
    probs = assessed.pop("probabilities")
    predictions = ranked(manifest, probs, raw if assessed["calibrated"] else None)
    return probs, {"predictions": predictions, "top": predictions[0], **assessed}


def _logged(req: ImageRequest, reason: str | None) -> None:
    """DERMCAM_SCOPE=measure: the photograph is answered, the decline it would get logged."""
    if reason:
        req.log_fields["would_abstain"] = reason


def _screen_photo(
    manifest: Manifest, decoded: imaging.DecodedImage, settings: Settings, req: ImageRequest
) -> None:
    """Declines (OutOfScope) a photograph too small, dark, washed out or blurred to read."""
    enforce = settings.scope == "enforce"
    _logged(
        req,
        trust.screen_photo(manifest.trust, decoded.image, decoded.width, decoded.height, enforce),
    )


def _screen_features(
    manifest: Manifest, features: np.ndarray | None, settings: Settings, req: ImageRequest
) -> None:
    """Declines a photograph unlike the calibration set, before any answer or map is made."""
    _logged(req, trust.screen_features(manifest.trust, features, settings.scope == "enforce"))


def _decode(
    req: ImageRequest, settings: Settings, manifest: Manifest, timer: Timer
) -> imaging.DecodedImage:
    """The upload, and the model's tensor made as its training pipeline made it."""
    decoded = imaging.decode(req.data, settings.max_pixels, image_input(manifest))
    req.log_fields["image"] = decoded.sha256[:12]  # a prefix identifies; never the bytes
    timer.mark("decode")
    return decoded


def _image_summary(decoded: imaging.DecodedImage) -> dict[str, Any]:
    return {
        "sha256": decoded.sha256,
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format.lower(),
    }


def predict(model: ModelCache, req: ImageRequest, settings: Settings) -> dict[str, Any]:
    timer = Timer()
    engine = model.get()  # loads it on a cold instance: decoding needs its input pipeline
    timer.mark("model")
    manifest = engine.manifest
    decoded = _decode(req, settings, manifest, timer)
    _screen_photo(manifest, decoded, settings, req)
    inputs = model_inputs(manifest, decoded, req.options)
    seen = engine.observe(inputs.image, inputs.extras)
    timer.mark("inference")
    _screen_features(manifest, seen.features, settings, req)
    _, said = claims(manifest, seen.probabilities)
    req.log_fields["top"] = said["top"]["code"]
    if said.get("decision"):
        req.log_fields["refer"] = said["decision"]["refer"]
    return {
        "model": manifest.summary(),
        **said,
        "image": _image_summary(decoded),
        **inputs.answer(),
        "timing_ms": timer.summary(),
    }


def gradcam(
    model: ModelCache, store: HeatmapStore, req: ImageRequest, settings: Settings
) -> dict[str, Any]:
    timer = Timer()
    method = resolve_method(req.options.get("method"))
    engine = model.get()  # loads it on a cold instance: decoding needs its input pipeline
    timer.mark("model")
    manifest = engine.manifest
    decoded = _decode(req, settings, manifest, timer)
    _screen_photo(manifest, decoded, settings, req)
    class_spec = req.options.get("class")
    target = None if class_spec in (None, "") else resolve_class(class_spec, manifest)
    inputs = model_inputs(manifest, decoded, req.options)
    probs = None
    if target is None:  # default: explain the top class
        seen = engine.observe(inputs.image, inputs.extras)
        _screen_features(manifest, seen.features, settings, req)
        probs = seen.probabilities
        target = int(np.argmax(probs))
    key = heatmap_key(manifest.name, manifest.version, method, target, inputs.key)
    width, height = render.heatmap_size(decoded.width, decoded.height)

    # A cold instance answers its first heatmap inline and makes the storage client after the
    # answer: importing google-cloud-storage and making the client is ~0.4 s of CPU, which at
    # a fraction of a vCPU is seconds the user would wait (docs/PERFORMANCE.md).
    cold = not store.ready
    storage_error = COLD_STORAGE if cold else None
    stored = None
    if not cold:
        try:
            stored = store.find(key)
        except StorageUnavailable as exc:
            storage_error = str(exc)
        timer.mark("lookup")
    grid = _stored_grid(stored)
    cached = grid is not None
    if cached:
        if probs is None:  # a stored map of a class asked for: the photograph is screened still
            seen = engine.observe(inputs.image, inputs.extras)
            _screen_features(manifest, seen.features, settings, req)
            probs = seen.probabilities
        timer.mark("inference")
        png = None
    else:
        explanation = engine.explain(inputs.image, target, inputs.extras)
        if probs is None:  # declined before a map is drawn or stored
            _screen_features(manifest, pooled(explanation.activations), settings, req)
        probs = explanation.probabilities
        grid = cam.class_map(explanation.activations, explanation.gradients, method)
        timer.mark("inference")
        png = render.png_bytes(render.heatmap_image(grid, width, height))
        timer.mark("render")
        # float64 first: a rounded float32 prints as 0.3440000116825104 in JSON
        grid = np.round(grid.astype(np.float64), GRID_DECIMALS)
        metadata = grid_metadata(grid, {"method": method, "class": target})
        if storage_error is None:
            try:
                stored = store.put(key, png, "image/png", metadata)
            except StorageUnavailable as exc:
                storage_error = str(exc)
            timer.mark("store")
        elif cold:
            store_later = functools.partial(store.put, key, png, "image/png", metadata)
            req.after_response.append(store.prepare_then(store_later))

    heatmap: dict[str, Any] = {
        "width": width,
        "height": height,
        "cached": cached,
        "grid": grid.tolist(),  # rounded once: fresh above, or as stored
        "empty": cam.is_blank(grid),  # a blank map must say so rather than look like an answer
    }
    if stored is not None:
        heatmap.update(
            object=stored.object, url=stored.url, expires_at=stored.expires_at, stored=True
        )
    else:
        heatmap.update(
            object=None,
            expires_at=None,
            stored=False,
            url="data:image/png;base64," + base64.b64encode(png).decode(),
        )
        telemetry.log(
            "INFO" if cold else "WARNING",
            "heatmap answered inline" + (", stored after the answer" if cold else "; not stored"),
            function="gradcam",
            image=decoded.sha256[:12],
            reason=storage_error,
        )
    if _truthy(req.options.get("composite")):
        heatmap["composite"] = _composite(store, decoded, grid, key, width, height)
    req.log_fields.update(
        target=manifest.labels[target].code,
        cam_method=method,
        cached=cached,
        stored=stored is not None,
    )
    served, said = claims(manifest, probs)
    return {
        "model": manifest.summary(),
        **said,
        "image": _image_summary(decoded),
        **inputs.answer(),
        "target": {
            "index": target,
            "code": manifest.labels[target].code,
            "name": manifest.labels[target].name,
            "probability": round(float(served[target]), 6),
        },
        "method": method,
        "heatmap": heatmap,
        "timing_ms": timer.summary(),
    }


def _stored_grid(stored: StoredObject | None) -> np.ndarray | None:
    """The map kept with a stored heatmap, or None: nothing stored, no map kept (too large),
    or metadata this version cannot read (then the map is recomputed)."""
    if stored is None or "grid" not in stored.metadata:
        return None
    try:
        return decode_grid(stored.metadata["grid"])
    except ValueError:
        return None


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _composite(
    store: HeatmapStore,
    decoded: imaging.DecodedImage,
    grid: np.ndarray,
    key: str,
    width: int,
    height: int,
) -> dict[str, Any]:
    """The photo with the heatmap laid over it, as a JPEG for reports and downloads. Stored
    only when asked for: it contains the photo itself."""
    picture = render.composite(decoded.image, render.heatmap_image(grid, width, height))
    data = render.jpeg_bytes(picture)
    composite_key = key.removesuffix(".png") + ".composite.jpg"
    try:
        stored = store.put(composite_key, data, "image/jpeg")
        return {
            "object": stored.object,
            "url": stored.url,
            "expires_at": stored.expires_at,
            "stored": True,
        }
    except StorageUnavailable:
        return {
            "object": None,
            "url": "data:image/jpeg;base64," + base64.b64encode(data).decode(),
            "expires_at": None,
            "stored": False,
        }
