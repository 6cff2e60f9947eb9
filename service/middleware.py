"""ASGI middleware: the request body size limit."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge
from service.problems import service_error_response


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
                await service_error_response(self._error(value.decode()))(scope, receive, send)
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
