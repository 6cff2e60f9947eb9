"""RFC 9457 problem+json responses, and the exception handlers that produce them."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.errors import ServiceError

log = logging.getLogger("service.errors")
PROBLEM_MEDIA_TYPE = "application/problem+json"
V2_PREFIX = "/v2"  # the Open Inference Protocol's paths keep its own error shape

_HTTP_CODES = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "The request body is over the size limit"),
}


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {
        "type": f"https://cnn-serve.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def is_v2_path(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_response(
    path: str,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """problem+json, except under /v2: the Open Inference Protocol's {"error": message}."""
    if is_v2_path(path):
        body = orjson.dumps({"error": detail})
        return Response(body, status, headers=headers, media_type="application/json")
    return problem(status, code, title, detail, headers)


def service_error_response(exc: ServiceError, path: str = "") -> Response:
    return error_response(path, exc.status, exc.code, exc.title, exc.detail, exc.headers)


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)  # registered for ServiceError only
    return service_error_response(exc, request.url.path)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(
        request.url.path,
        422,
        "invalid_parameter",
        "A parameter is out of range or malformed",
        "; ".join(parts),
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    headers = dict(exc.headers or {})
    return error_response(request.url.path, exc.status_code, code, title, str(exc.detail), headers)


async def _on_client_disconnect(request: Request, exc: Exception) -> Response:
    # The connection closed before the body was complete: the client left, or uvicorn closed
    # it on a body it could not parse (and answered that itself). Nobody reads this answer;
    # the log line and the metrics record it, without the traceback of an unexpected error.
    return error_response(
        request.url.path,
        400,
        "client_disconnected",
        "The connection closed before the request was read",
        "the connection closed before the request body was complete",
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", "-")
    log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
    detail = f"unexpected error; request id {request_id}"
    return error_response(request.url.path, 500, "internal_error", "Internal server error", detail)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(ClientDisconnect, _on_client_disconnect)
    app.add_exception_handler(Exception, _on_unexpected)
