"""ASGI middleware: request body and head size limits, and arrival tracking for batching."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.arrivals import Arrivals
from service.errors import BodyTimeout, HeadersTooLarge, PayloadTooLarge
from service.problems import service_error_response
from service.trace import trace_of


class BodySizeLimit:
    """Refuse bodies over `limit` bytes: from Content-Length at once, else while reading.

    Counting the received chunks covers chunked transfer encoding and lying
    Content-Length headers; nothing past the limit is read.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _error(self, size: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the body is {size} bytes; the limit is {self.limit} (CNN_MAX_BODY_BYTES)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                refusal = service_error_response(self._error(value.decode()), scope)
                await refusal(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._error(f"more than {received}")
            return message

        await self.app(scope, limited_receive, send)


class BodyReadTimeout:
    """Bound each wait for body data by `idle_s`, and the whole upload by the request deadline.

    A client that declares a body and stalls is answered 408 `body_timeout` (and the
    connection closed), releasing what its request holds (spooled parts included).
    """

    def __init__(self, app: ASGIApp, *, idle_s: float, request_timeout_s: float) -> None:
        self.app = app
        self.idle_s = idle_s
        self.request_timeout_s = request_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = trace_of(scope).arrived + self.request_timeout_s

        async def timed_receive() -> Message:
            left = deadline - time.monotonic()
            wait = min(self.idle_s, left)
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    return await receive()
            except TimeoutError:
                if wait < self.idle_s:
                    why = f"the request deadline ({self.request_timeout_s:g} s) passed"
                else:
                    why = f"no body data came for {self.idle_s:g} s (CNN_BODY_TIMEOUT_S)"
                raise BodyTimeout(f"{why} while the body was being sent") from None

        await self.app(scope, timed_receive, send)


class HeaderSizeLimit:
    """Refuse a request whose target and headers together exceed `limit` bytes: 431.

    The HTTP parser (httptools) accepts headers of any size; this keeps a client from
    making every later layer handle megabytes of them.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.limit:
                error = HeadersTooLarge(
                    f"the request target and headers are {size} bytes; "
                    f"the limit is {self.limit} (CNN_MAX_HEADER_BYTES)"
                )
                await service_error_response(error, scope)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ArrivalTracking:
    """Count every request that may reach a batcher from the moment its body has arrived.

    Only POSTs run models. The ticket rides in the request's state and arrives with
    the last body chunk, not before: a stalled upload is no company worth waiting for.
    The batcher settles it when the request is queued, and this settles it otherwise.
    """

    def __init__(self, app: ASGIApp, *, arrivals: Arrivals) -> None:
        self.app = app
        self.arrivals = arrivals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        arrival = self.arrivals.ticket()
        scope.setdefault("state", {})["arrival"] = arrival

        async def receive_arriving() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                arrival.arrive()
            return message

        try:
            await self.app(scope, receive_arriving, send)
        finally:
            arrival.settle()
