"""Typed errors that map to one HTTP status and a stable JSON error code each."""


class DermcamError(Exception):
    """Base class: `status` and `code` say how the HTTP layer reports it."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidImage(DermcamError):
    status = 400
    code = "invalid_image"


class BadRequest(DermcamError):
    status = 400
    code = "bad_request"


class Unauthenticated(DermcamError):
    """No valid App Check token (`appcheck`): refused before any model work."""

    status = 401
    code = "unauthenticated"


class RateLimited(DermcamError):
    """Past this client's requests per minute (`ratelimit`); `retry_after` in seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {**super().body()["error"], "retry_after_s": self.retry_after}}


class MethodNotAllowed(DermcamError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(DermcamError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(DermcamError):
    status = 415
    code = "unsupported_media_type"


class UnknownTarget(DermcamError):
    status = 422
    code = "unknown_class"


class UnknownMethod(DermcamError):
    status = 422
    code = "unknown_method"


class InvalidMetadata(DermcamError):
    status = 422
    code = "invalid_metadata"


class OutOfScope(DermcamError):
    """The photograph is not one the model may diagnose: no diagnosis, no heat map, and the
    reason beside the error (`abstain`). 422: the request was well formed, its content is
    what cannot be answered, and a client that reads only the status cannot take it for one."""

    status = 422
    code = "out_of_scope"

    def __init__(self, message: str, abstain: dict) -> None:
        super().__init__(message)
        self.abstain = abstain

    def body(self) -> dict:
        return {**super().body(), "abstain": self.abstain}


class ModelUnavailable(DermcamError):
    status = 503
    code = "model_unavailable"
