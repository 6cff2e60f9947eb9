"""Service errors: each carries its HTTP status and a stable machine-readable code.

One handler on the base class turns any of them into an RFC 9457
problem+json response (see service/problems.py); unexpected exceptions
become a generic 500 whose details stay in the server log.
"""

from __future__ import annotations

from typing import ClassVar


class DeviceUnavailable(Exception):
    """The configured device does not exist on this machine (a start-up error, not HTTP)."""


class ServiceError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"
    # The cnn_rejected_total reason when this error refuses a request before inference.
    rejection: ClassVar[str | None] = None

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidImage(ServiceError):
    status, code, title = 400, "invalid_image", "The body is not a readable image"


class InvalidBody(ServiceError):
    status, code, title = 400, "invalid_body", "The request body is malformed"


class InvalidParameter(ServiceError):
    status, code, title = 422, "invalid_parameter", "A parameter is out of range or malformed"


class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "A valid API key is required"


class Forbidden(ServiceError):
    status, code, title = 403, "forbidden", "This key may not do that"


class ModelControlUnavailable(ServiceError):
    status, code, title = 409, "model_control_unavailable", "Models cannot be loaded or unloaded"


class ModelLoadFailed(ServiceError):
    status, code, title = 400, "model_load_failed", "The model version could not be loaded"


class UnknownModel(ServiceError):
    status, code, title = 404, "unknown_model", "No model by that name is served"


class UnknownLayer(ServiceError):
    status, code, title = 404, "unknown_layer", "The model has no feature-map layer by that name"


class PayloadTooLarge(ServiceError):
    status, code, title = 413, "payload_too_large", "The request body is over the size limit"
    rejection = "too_large"


class TooManyImages(ServiceError):
    status, code, title = 413, "too_many_images", "The request carries more images than allowed"
    rejection = "too_large"


class ImageTooLarge(ServiceError):
    status, code, title = 413, "image_too_large", "The image has more pixels than allowed"
    rejection = "too_large"


class HeadersTooLarge(ServiceError):
    status, code, title = 431, "headers_too_large", "The request head is too large"


class TooManyPixels(ServiceError):
    status, code, title = (
        413,
        "too_many_pixels",
        "The request's images have more pixels than allowed",
    )
    rejection = "too_large"


class MalformedRequest(ServiceError):
    status, code, title = 400, "malformed_request", "The request is not valid HTTP/1.1"


class HeadTimeout(ServiceError):
    status, code, title = 408, "header_timeout", "The request head did not arrive in time"


class BodyTimeout(ServiceError):
    status, code, title = 408, "body_timeout", "The request body did not arrive in time"

    def __init__(self, detail: str) -> None:
        # The rest of the body may still come: the connection cannot carry another request.
        super().__init__(detail, headers={"Connection": "close"})


class ResponseTooLarge(ServiceError):
    status, code, title = 413, "response_too_large", "The response would be over the size limit"


class UnsupportedMediaType(ServiceError):
    status, code, title = 415, "unsupported_media_type", "The Content-Type is not accepted here"


class UnsupportedImageFormat(ServiceError):
    status, code, title = 415, "unsupported_image_format", "The image format is not accepted"


class Overloaded(ServiceError):
    status, code, title = 503, "overloaded", "The server is at capacity; retry shortly"
    rejection = "queue_full"


class NotReady(ServiceError):
    status, code, title = 503, "not_ready", "The server is starting or shutting down"
    rejection = "not_ready"


class RequestTimeout(ServiceError):
    status, code, title = 504, "timeout", "The request waited past its deadline"


class InternalError(ServiceError):
    """An unexpected error: its details stay in the server log, the client gets the request id."""


class InferenceFailed(ServiceError):
    status, code, title = 500, "inference_failed", "The model failed on this input"


class EngineUnavailable(ServiceError):
    status, code, title = 503, "engine_unavailable", "The model's engine process is restarting"
    rejection = "not_ready"


def error_named(name: str) -> type[ServiceError]:
    """The ServiceError class of that name (an error raised in another process); else the base."""
    pending: list[type[ServiceError]] = [ServiceError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return InternalError
