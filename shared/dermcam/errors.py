"""Typed errors that map to one HTTP status and a stable JSON error code each."""


class DermcamError(Exception):
    """Base class: `status` and `code` say how the HTTP layer reports it."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(DermcamError):
    status = 400
    code = "invalid_image"


class BadRequest(DermcamError):
    status = 400
    code = "bad_request"


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


class ModelUnavailable(DermcamError):
    status = 503
    code = "model_unavailable"
