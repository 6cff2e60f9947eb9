"""Per request: an id, a Server-Timing header, the request metrics and one log line.

`RequestObservability` is a pure ASGI middleware (no BaseHTTPMiddleware: it sits
on every request, so it adds two headers, a few dict reads and one log call,
and never wraps the body in a stream). Added last, it is the outermost user
middleware and sees every response, including those answered before routing.

The phases come from the request's state (the ASGI scope's "state" dict), where
service.inference leaves them: preprocess_s (wall time of decode + preprocess),
preprocess_images_s (the same work summed per image, for the per-image
histogram), queue_wait_s, inference_s, batch_size, images and model.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics
from service.problems import PROBLEM_MEDIA_TYPE, error_response

log = logging.getLogger("service.requests")

UNMATCHED = (
    "unmatched"  # the endpoint label of every URL no route serves: one series, not one per URL
)
METRICS_PATH = "/metrics"
# Echoed only when it is a plausible id: a header must never inject into logs or headers.
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")
_PROBLEM_TYPE = (b"content-type", PROBLEM_MEDIA_TYPE.encode())
_PHASES = (
    ("preprocess", "preprocess_s"),
    ("queue", "queue_wait_s"),
    ("inference", "inference_s"),
)
# Problem codes that mean "refused before inference", and the reason label they count under.
_REJECTIONS = {
    "overloaded": "queue_full",
    "payload_too_large": "too_large",
    "too_many_images": "too_large",
    "image_too_large": "too_large",
    "not_ready": "not_ready",
}


class RouteTemplates:
    """The route template a request matched: the `endpoint` label, never the raw path."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._table: list[tuple[re.Pattern[str], str]] | None = None

    def resolve(self, scope: Scope) -> tuple[str, Mapping[str, Any]]:
        template = getattr(scope.get("route"), "path_format", None)
        if isinstance(template, str):  # routed by FastAPI: the common, free case
            return template, scope.get("path_params") or {}
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for regex, candidate in self._templates():
            match = regex.match(path)
            if match:
                return candidate, match.groupdict()
        return UNMATCHED, {}

    def prepare(self) -> None:
        """Build the table at start-up: FastAPI's schema takes a fifth of a second to make."""
        self._table = self._build()

    def _templates(self) -> list[tuple[re.Pattern[str], str]]:
        """Routes to match answers given before routing (body limit, 404s, mounts)."""
        if self._table is None:
            self._table = self._build()
        return self._table

    def _build(self) -> list[tuple[re.Pattern[str], str]]:
        try:
            paths = list(self._app.openapi().get("paths", {}))
        except Exception:  # a broken schema must not stop the service; /openapi.json shows it
            log.warning("no OpenAPI schema: requests refused before routing count as unmatched")
            paths = []
        table = [(compile_path(path)[0], path) for path in paths]
        for route in self._app.router.routes:
            regex = getattr(route, "path_regex", None)
            template = getattr(route, "path_format", None)
            if isinstance(regex, re.Pattern) and isinstance(template, str):
                table.append((regex, template))
        return table


@dataclass(slots=True)
class _Exchange:
    """What the middleware learns about one request while it is answered."""

    started: float
    request_id: str
    status: int = 500
    headers_sent: bool = False
    is_problem: bool = False
    retry_after: bool = False
    error_code: str | None = None

    def started_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers_sent = True
        if status >= 400:
            self.is_problem = _PROBLEM_TYPE in headers
            self.retry_after = any(name == b"retry-after" for name, _ in headers)

    def rejection(self) -> str | None:
        """The cnn_rejected_total reason, if the request was refused before inference."""
        if self.error_code is not None:
            return _REJECTIONS.get(self.error_code)
        # No problem body to read (the /v2 paths answer {"error": ...}): the status tells.
        if self.status == 413:
            return "too_large"
        if self.status == 503:
            return "queue_full" if self.retry_after else "not_ready"
        return None


def server_timing(state: Mapping[str, Any], total_s: float) -> bytes:
    parts = [
        f"{name};dur={state[key] * 1000.0:.3f}"
        for name, key in _PHASES
        if state.get(key) is not None
    ]
    parts.append(f"total;dur={total_s * 1000.0:.3f}")
    return ", ".join(parts).encode("latin-1")


def _problem_code(body: bytes) -> str | None:
    try:
        code = orjson.loads(body).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if _CLIENT_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


def _ms(value: object) -> float | None:
    return round(value * 1000.0, 3) if isinstance(value, float) else None


class RequestObservability:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: RouteTemplates) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self._routes.prepare()
            await self.app(scope, receive, send)
            return
        # A copy per request: a server or test transport may hand every request the same dict.
        state: dict[str, Any] = dict(scope.get("state") or ())
        scope["state"] = state
        exchange = _Exchange(time.perf_counter(), _request_id(scope["headers"]))
        state["request_id"] = exchange.request_id
        counted = scope["path"] != METRICS_PATH  # a scrape would always see itself in flight
        if counted:
            self._metrics.request_started()
        send_observed = _observing_send(send, state, exchange)
        error: Exception | None = None
        try:
            await self.app(scope, receive, send_observed)
        except Exception as exc:
            error = exc
            if exchange.headers_sent:
                raise
            # Answered here, not by the server's error handler, so it carries the request id.
            detail = f"unexpected error; request id {exchange.request_id}"
            response = error_response(
                scope["path"], 500, "internal_error", "Internal server error", detail
            )
            await response(scope, receive, send_observed)
        finally:
            if counted:
                self._metrics.request_finished()
            self._record(scope, state, exchange, error)

    def _record(
        self, scope: Scope, state: Mapping[str, Any], exchange: _Exchange, error: Exception | None
    ) -> None:
        total = time.perf_counter() - exchange.started
        endpoint, params = self._routes.resolve(scope)
        model = state.get("model") or self._metrics.served_name(params.get("name"))
        self._metrics.observe_request(model, endpoint, exchange.status, total)
        images = state.get("images")
        work = state.get("preprocess_images_s")
        if images and work is not None:
            self._metrics.observe_preprocess(model, work / images, images)
        reason = exchange.rejection()
        if reason is not None:
            self._metrics.count_rejection(model, reason)
        level = logging.INFO if exchange.status < 500 else logging.WARNING
        if error is not None:
            level = logging.ERROR
        if log.isEnabledFor(level):
            fields = _log_fields(scope, state, exchange, endpoint, model, total)
            args = (scope["method"], endpoint, exchange.status)
            exc_info = (type(error), error, error.__traceback__) if error is not None else None
            # makeRecord + handle, not log.log: the caller's file and line would be this one
            # every time, and looking them up walks the stack on every request.
            record = log.makeRecord(
                log.name, level, "", 0, "%s %s %d", args, exc_info, extra=fields
            )
            log.handle(record)


def _observing_send(send: Send, state: Mapping[str, Any], exchange: _Exchange) -> Send:
    """`send`, adding X-Request-ID and Server-Timing and noting the status and error code."""
    id_header = (b"x-request-id", exchange.request_id.encode("ascii"))

    async def send_observed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            exchange.started_response(message["status"], headers)
            elapsed = time.perf_counter() - exchange.started
            headers += [id_header, (b"server-timing", server_timing(state, elapsed))]
            message = {**message, "headers": headers}
        elif exchange.is_problem and message["type"] == "http.response.body":
            exchange.is_problem = False  # problem bodies are small and sent whole
            exchange.error_code = _problem_code(message.get("body", b""))
        await send(message)

    return send_observed


def _log_fields(
    scope: Scope,
    state: Mapping[str, Any],
    exchange: _Exchange,
    endpoint: str,
    model: str,
    total: float,
) -> dict[str, Any]:
    return {
        "request_id": exchange.request_id,
        "method": scope["method"],
        "path": scope["path"],
        "endpoint": endpoint,
        "model": model or None,
        "status": exchange.status,
        "error": exchange.error_code,
        "images": state.get("images"),
        "batch_size": state.get("batch_size"),
        "preprocess_ms": _ms(state.get("preprocess_s")),
        "queue_ms": _ms(state.get("queue_wait_s")),
        "inference_ms": _ms(state.get("inference_s")),
        "total_ms": _ms(total),
    }
