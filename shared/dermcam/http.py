"""HTTP edge shared by both functions: parse the upload, CORS, JSON answers, errors, logs.

Accepted bodies: multipart field `image`, a raw image/jpeg|png|webp body, or JSON
{"image": "<base64>", ...}. Options (`class`, `method`, ...) come from form fields, JSON
fields or query arguments. Every answer is JSON; bad input is a 4xx, never a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import flask
from werkzeug.exceptions import RequestEntityTooLarge

from dermcam import telemetry
from dermcam.config import Settings
from dermcam.errors import (
    BadRequest,
    DermcamError,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
)
from dermcam.gate import Gate

RAW_TYPES = ("image/jpeg", "image/png", "image/webp")
CORS_MAX_AGE = "3600"


@dataclass
class ImageRequest:
    data: bytes
    options: dict[str, Any] = field(default_factory=dict)
    log_fields: dict[str, Any] = field(default_factory=dict)  # filled in by the handler
    # Work for after the answer has gone out (e.g. storing a cold instance's first heatmap).
    after_response: list[Callable[[], None]] = field(default_factory=list)


def _too_large(settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(f"The upload is larger than {settings.max_upload_mb:g} MB.")


def _read_limited(stream: Any, settings: Settings) -> bytes:
    data = stream.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise RequestEntityTooLarge()
    return data


def parse_image_request(request: flask.Request, settings: Settings) -> ImageRequest:
    """The image bytes and options of a POST. Raises 400/413/415 errors."""
    try:
        if request.content_length is not None and (
            request.content_length > settings.max_upload_bytes
        ):
            raise RequestEntityTooLarge()
        # Bounds the form parser and the stream too: a chunked upload has no Content-Length.
        # One byte over the limit, so reading limit + 1 tells "too large" from "exactly".
        request.max_content_length = settings.max_upload_bytes + 1
        return _parse(request, settings)
    except RequestEntityTooLarge as exc:
        raise _too_large(settings) from exc


def _parse(request: flask.Request, settings: Settings) -> ImageRequest:
    options: dict[str, Any] = dict(request.args.items())
    mimetype = (request.mimetype or "").lower()
    if mimetype == "multipart/form-data":
        files = request.files.getlist("image")
        if not files:
            raise BadRequest("The multipart form has no field named 'image'.")
        if len(files) > 1 or len(request.files) > 1:
            raise BadRequest("Send exactly one file, in the field 'image'.")
        options.update(request.form.items())
        return ImageRequest(_read_limited(files[0].stream, settings), options)
    if mimetype in RAW_TYPES:
        return ImageRequest(_read_limited(request.stream, settings), options)
    if mimetype == "application/json":
        try:
            body = json.loads(_read_limited(request.stream, settings) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("The body is not valid JSON.") from exc
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise BadRequest('JSON bodies must be an object with "image": "<base64>".')
        encoded = body.pop("image")
        if encoded.startswith("data:") and "," in encoded:  # a data: URL from a browser
            encoded = encoded.split(",", 1)[1]
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest('"image" is not valid base64.') from exc
        for key, value in body.items():
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise BadRequest(f'"{key}" must be a string or an integer.')
            options[key] = value
        return ImageRequest(data, options)
    shown = mimetype or "none"
    raise UnsupportedMediaType(
        f"Content type {shown!r} is not accepted: send multipart/form-data with a field 'image', "
        'a raw image/jpeg, image/png or image/webp body, or JSON {"image": "<base64>"}.'
    )


def cors_headers(request: flask.Request, settings: Settings) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin:
        return {}
    if "*" in settings.allowed_origins:
        return {"Access-Control-Allow-Origin": "*"}
    if origin in settings.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {}


def _json(body: dict[str, Any], status: int, headers: dict[str, str]) -> flask.Response:
    response = flask.Response(
        json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json"
    )
    response.headers.update(headers)
    response.headers["Cache-Control"] = "no-store"
    return response


class Model(Protocol):
    """What the HTTP edge asks of the instance's model (cache.ModelCache)."""

    def warmup(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...

    def loaded_version(self) -> str | None: ...


def serve(
    request: flask.Request,
    settings: Settings,
    function: str,
    handle: Callable[[ImageRequest], dict[str, Any]],
    model: Model,
    gate: Gate | None = None,
) -> flask.Response:
    """Run one request through `handle` (POST), `model.warmup` (GET ?warmup=1) or
    `model.describe` (GET ?model=1) and answer JSON, once it has passed `gate` (the rate
    limit and App Check, when the settings turn them on)."""
    started = time.perf_counter()
    cors = cors_headers(request, settings)
    fields: dict[str, Any] = {}
    later: list[Callable[[], None]] = []
    if request.method == "OPTIONS":
        if cors:
            cors.update(
                {
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Content-Type, X-Firebase-AppCheck",
                    "Access-Control-Max-Age": CORS_MAX_AGE,
                }
            )
        response = flask.Response(status=204, headers=cors)
        _log(function, request, 204, started, fields, model.loaded_version())
        return response
    retry_after = None
    try:
        if gate is not None:
            fields.update(gate.check(request))
        if request.method == "GET" and request.args.get("warmup") in ("1", "true"):
            body, status = model.warmup(), 200
        elif request.method == "GET" and request.args.get("model") in ("1", "true"):
            body, status = model.describe(), 200
        elif request.method == "POST":
            parsed = parse_image_request(request, settings)
            parsed.log_fields = fields
            parsed.after_response = later
            body, status = handle(parsed), 200
        else:
            raise MethodNotAllowed(
                "POST an image to this function; GET ?warmup=1 loads the model, "
                "GET ?model=1 describes it."
            )
    except DermcamError as exc:
        body, status = exc.body(), exc.status
        # functions-framework drains unread bodies after the response (get_data()); mark the
        # body as read so a refused upload is neither buffered in memory nor, past the
        # limit, a 500. The connection is closed instead of kept alive.
        request._cached_data = b""
        fields["error"] = exc.code
        if isinstance(exc, RateLimited):
            retry_after = exc.retry_after
    except Exception as exc:  # noqa: BLE001 - answer JSON, log the type, never the trace
        telemetry.log(
            "ERROR",
            f"{function} failed",
            function=function,
            error_type=type(exc).__name__,
            error=str(exc)[:300],
        )
        body = {"error": {"code": "internal", "message": "The request could not be processed."}}
        status = 500
    headers = dict(cors)
    if status == 405:
        headers["Allow"] = "GET, POST, OPTIONS"
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    _log(function, request, status, started, fields, model.loaded_version())
    response = _json(body, status, headers)
    for work in later:  # the WSGI server closes the response once it is sent
        response.call_on_close(work)
    return response


def _log(
    function: str,
    request: flask.Request,
    status: int,
    started: float,
    fields: dict[str, Any],
    version: str | None,
) -> None:
    memory = telemetry.memory()
    severity = "ERROR" if status >= 500 else "WARNING" if status >= 400 else "INFO"
    extra = {}
    trace = request.headers.get("X-Cloud-Trace-Context", "")
    if trace:
        extra["trace_id"] = trace.split("/", 1)[0][:64]
    telemetry.log(
        severity,
        f"{function} {request.method} {status}",
        function=function,
        model_version=version,
        status=status,
        http_method=request.method,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        rss_mb=memory["rss_mb"],
        peak_mb=memory["peak_mb"],
        **fields,
        **extra,
    )
