"""The HTTP/1.1 protocol: uvicorn's httptools one, with the request head bounded while it is read.

httptools buffers a header line of any length, and waits for a head forever: a
200 MB header line was held whole before the app could answer 431, and a client
that trickles a head byte by byte (slowloris) or connects and sends nothing held
its connection for good. Here the bytes of a head are counted as they arrive,
before the parser buffers them, and the head has `head_timeout_s` to complete
from its first byte (or from the connection, for the first request). Past either
bound the client gets a problem+json answer (431 or 408) and the connection is
closed. A head that completes in one read a little over the limit still reaches
the app, whose `HeaderSizeLimit` answers it: at most one read (256 KiB) more is held.

When the parser gives up on a request (a lowercase method, a bad chunk size, a header
name with a space, a request target of 64 KiB or more, which httptools's URL parser cannot
hold, TLS or HTTP/2 sent to the plain HTTP/1.1 port) uvicorn writes its own text/plain
400; here it is problem+json with the stable code `malformed_request`, still 400, still
closed. Answers given at this layer reach no route: uvicorn's warning or this module's
INFO line records them, not the request metrics.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import HeadersTooLarge, HeadTimeout, MalformedRequest, ServiceError
from service.problems import PROBLEM_MEDIA_TYPE, problem_body
from service.security import COMMON_HEADERS
from service.settings import Settings

log = logging.getLogger("service.protocol")


class BoundedHeadProtocol(HttpToolsProtocol):
    """One connection. Subclasses made by `bounded_head_protocol` set the two bounds."""

    max_head_bytes: ClassVar[int] = 64 * 1024
    head_timeout_s: ClassVar[float] = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()  # a client that connects and sends nothing is timed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._arm_head_timer()
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._refuse(
                HeadersTooLarge(
                    f"the request head is over {self.max_head_bytes} bytes "
                    "(CNN_MAX_HEADER_BYTES); refused while it was still arriving"
                )
            )

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser refused, as problem+json."""
        error = MalformedRequest(
            "the server could not parse the request (method, request line, headers or "
            "chunked body); nothing was run"
        )
        default = b"".join(n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers)
        self.transport.write(_raw_problem(error, default))
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head waits for the answer before it
            return
        if self._head_bytes == 0:  # nothing said, nothing to answer
            self.transport.close()
            return
        self._refuse(
            HeadTimeout(
                f"the request head did not arrive within {self.head_timeout_s:g} s "
                "(CNN_HEADER_TIMEOUT_S)"
            )
        )

    def _refuse(self, error: ServiceError) -> None:
        """Answer at the HTTP layer (no request reached the app) and close the connection."""
        if self.transport.is_closing():
            return
        self._cancel_head_timer()
        if self.cycle is None or self.cycle.response_complete:  # not mid-way through an answer
            self.transport.write(_raw_problem(error))
        log.info(
            "request head refused",
            extra={"status": error.status, "error": error.code, "client": _client(self.client)},
        )
        self.transport.close()


def _raw_problem(error: ServiceError, default_headers: bytes = b"") -> bytes:
    """A whole HTTP answer, written at the protocol layer: no route, no middleware."""
    body = problem_body(error.status, error.code, error.title, error.detail)
    headers = {
        "content-type": PROBLEM_MEDIA_TYPE,
        "content-length": str(len(body)),
        **{name.lower(): value for name, value in COMMON_HEADERS.items()},
        "connection": "close",
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return STATUS_LINE[error.status] + default_headers + head.encode("ascii") + b"\r\n" + body


def _client(client: tuple[str, int] | None) -> str | None:
    return None if client is None else f"{client[0]}:{client[1]}"


def bounded_head_protocol(*, max_head_bytes: int, head_timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with these bounds."""
    return type(
        "BoundedHeadProtocol",
        (BoundedHeadProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s},
    )


def connection_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config options that bound connections: the head, idle keep-alive, their number."""
    return {
        "http": bounded_head_protocol(
            max_head_bytes=settings.max_header_bytes, head_timeout_s=settings.header_timeout_s
        ),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        # uvicorn answers 503 past it, counting every open connection (idle keep-alive and
        # ones still sending a head included): the timeouts above keep those short-lived.
        "limit_concurrency": settings.max_connections,
    }
