"""RFC 9457 problem+json responses, and the exception handlers that produce them.

Every error answer goes through `error_response`, which also notes the error's
code (and its rejection reason) in the request's trace: the metrics and the log
line read the code from there, whatever shape the body has. Unexpected errors
are answered by service.observability, their one owner.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Scope

from models.validation import summarize_errors
from service.errors import ServiceError
from service.trace import trace_of

PROBLEM_MEDIA_TYPE = "application/problem+json"
# A client that left before its request was read is its own outcome, as nginx counts it:
# no server error, no traceback; the answer is recorded (metrics, log) and goes nowhere.
CLIENT_CLOSED_REQUEST = 499
V2_PREFIX = "/v2"  # the Open Inference Protocol's paths keep its own error shape

# Starlette's own HTTP errors: code, title, and the rejection reason where there is one.
_HTTP_CODES = {
    404: ("not_found", "Not found", None),
    405: ("method_not_allowed", "Method not allowed", None),
    413: ("payload_too_large", "The request body is over the size limit", "too_large"),
}


def problem_body(status: int, code: str, title: str, detail: str) -> bytes:
    body: dict[str, Any] = {
        "type": f"https://cnn-serve.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return orjson.dumps(body)


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    body = problem_body(status, code, title, detail)
    return Response(body, status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def is_v2_path(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_response(
    scope: Scope,
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    rejection: str | None = None,
) -> Response:
    """problem+json, except under /v2: the Open Inference Protocol's {"error": message}."""
    trace_of(scope).failed(code, rejection)
    if is_v2_path(scope["path"]):
        body = orjson.dumps({"error": detail})
        return Response(body, status, headers=headers, media_type="application/json")
    return problem(status, code, title, detail, headers)


def service_error_response(exc: ServiceError, scope: Scope) -> Response:
    return error_response(
        scope,
        exc.status,
        exc.code,
        exc.title,
        exc.detail,
        headers=exc.headers,
        rejection=exc.rejection,
    )


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)  # registered for ServiceError only
    return service_error_response(exc, request.scope)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    title = "A parameter is out of range or malformed"
    detail = summarize_errors(exc.errors())
    return error_response(request.scope, 422, "invalid_parameter", title, detail)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title, rejection = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error", None))
    return error_response(
        request.scope,
        exc.status_code,
        code,
        title,
        str(exc.detail),
        headers=dict(exc.headers or {}),
        rejection=rejection,
    )


async def _on_client_disconnect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClientDisconnect)
    title = "The client closed the connection before the request was read"
    detail = "the client disconnected while sending the request body"
    return error_response(
        request.scope, CLIENT_CLOSED_REQUEST, "client_disconnected", title, detail
    )


async def handled_error_response(request: Request, exc: Exception) -> Response | None:
    """The response the app's handlers give `exc`, for code that runs outside them; else None."""
    if isinstance(exc, ServiceError):
        return await _on_service_error(request, exc)
    if isinstance(exc, ClientDisconnect):
        return await _on_client_disconnect(request, exc)
    return None


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(ClientDisconnect, _on_client_disconnect)
