"""Per request: an id, a Server-Timing header, the request metrics and one log line.

`RequestObservability` is a pure ASGI middleware (no BaseHTTPMiddleware: it sits
on every request, so it adds two headers, a few attribute reads and one log
call, and never wraps the body in a stream). Added last, it is the outermost
user middleware and sees every response, including those answered before
routing; it is also the one owner of unexpected errors, answered here as a 500
with the request id and logged once with their traceback.

It creates the request's `RequestTrace` (service.trace); the code that learns a
fact writes it there, and this reads the trace when the answer is done.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import InternalError
from service.metrics import Metrics
from service.problems import service_error_response
from service.trace import TRACE_KEY, RequestTrace

log = logging.getLogger("service.requests")

UNMATCHED = "unmatched"  # the endpoint label of every URL no route serves: one series
METRICS_PATH = "/metrics"
# Echoed only when it is a plausible id: a header must never inject into logs or headers.
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        # FastAPI keeps an included router as one entry; it lists its own routes.
        nested = getattr(route, "effective_route_contexts", None)
        if callable(nested):
            yield from nested()
        else:
            yield route


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> tuple[str, Mapping[str, Any]]:
    """The route template a request matched: the `endpoint` label, never the raw path.

    A routed request carries its route; one answered before routing (a body limit, a
    refused key) is matched against the router's routes as Starlette's router matches:
    the first full match, else the first partial one (a path served for another method).
    """
    route, params = scope.get("route"), scope.get("path_params")
    if route is None:
        partial = None
        for candidate in _leaf_routes(routes):
            match, child = candidate.matches(scope)
            if match is Match.FULL:
                route, params = candidate, child.get("path_params")
                break
            if match is Match.PARTIAL and partial is None:
                partial = (candidate, child.get("path_params"))
        else:
            route, params = partial or (None, None)
    template = getattr(route, "path_format", None)
    if isinstance(template, str):
        return template, params or {}
    return UNMATCHED, {}


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if _CLIENT_ID.fullmatch(value):
                return value.decode("ascii")
            break
    # 128 random bits from the module's generator (seeded from os.urandom, and again in
    # each forked process). Not os.urandom itself: it gives up the GIL for its system call,
    # and on a busy server the event loop then waits for the GIL back, on every request.
    return f"{random.getrandbits(128):032x}"


class RequestObservability:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A copy per request: a server or test transport may hand every request the same dict.
        trace = RequestTrace(_request_id(scope["headers"]))
        scope["state"] = {**(scope.get("state") or {}), TRACE_KEY: trace}
        counted = scope["path"] != METRICS_PATH  # a scrape would always see itself in flight
        if counted:
            self._metrics.request_started()
        headers_sent = False
        id_header = (b"x-request-id", trace.request_id.encode("ascii"))

        async def send_observed(message: Message) -> None:
            nonlocal headers_sent
            if message["type"] == "http.response.start":
                headers_sent = True
                trace.status = message["status"]
                timing = (b"server-timing", trace.server_timing(trace.elapsed()))
                message = {**message, "headers": [*message.get("headers", ()), id_header, timing]}
            await send(message)

        error: Exception | None = None
        try:
            await self.app(scope, receive, send_observed)
        except Exception as exc:
            error = exc
            if headers_sent:
                raise
            failure = InternalError(f"unexpected error; request id {trace.request_id}")
            await service_error_response(failure, scope)(scope, receive, send_observed)
        finally:
            if counted:
                self._metrics.request_finished()
            self._record(scope, trace, error)

    def _record(self, scope: Scope, trace: RequestTrace, error: Exception | None) -> None:
        total = trace.elapsed()
        endpoint, params = route_template(self._routes, scope)
        model = trace.model or self._metrics.served_name(params.get("name"))
        self._metrics.observe_request(model, endpoint, trace.status, total)
        if trace.images and trace.preprocess_images_s is not None:
            self._metrics.observe_preprocess(
                model, trace.preprocess_images_s / trace.images, trace.images
            )
        if trace.rejection is not None:
            self._metrics.count_rejection(model, trace.rejection)
        level = logging.INFO if trace.status < 500 else logging.WARNING
        if error is not None:
            level = logging.ERROR
        if log.isEnabledFor(level):
            fields = {
                **trace.log_fields(total),
                "method": scope["method"],
                "path": scope["path"],
                "endpoint": endpoint,
                "model": model or None,
            }
            args = (scope["method"], endpoint, trace.status)
            exc_info = (type(error), error, error.__traceback__) if error is not None else None
            # makeRecord + handle, not log.log: the caller's file and line would be this one
            # every time, and looking them up walks the stack on every request.
            record = log.makeRecord(
                log.name, level, "", 0, "%s %s %d", args, exc_info, extra=fields
            )
            log.handle(record)
