"""Fast JSON responses (orjson; NumPy-aware), and large bodies sent in pieces.

A body handed to the server in one message is copied whole into the connection's
write buffer, and stays there, however slowly the client reads. Sent in pieces of
`PIECE_BYTES`, each waits until the buffer has drained below uvicorn's high-water
mark: a client that does not read holds at most one piece in the buffer, beside
the body itself (at most CNN_MAX_RESPONSE_BYTES) for as long as its connection lasts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

PIECE_BYTES = 1024 * 1024


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status, headers=headers, media_type="application/json")


def pieces(chunks: Iterable[bytes]) -> Iterator[memoryview]:
    """The chunks cut into pieces of at most PIECE_BYTES, without copying them."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), PIECE_BYTES):
            yield view[start : start + PIECE_BYTES]


async def _send_pieces(chunks: Sequence[bytes]) -> AsyncIterator[memoryview]:
    for piece in pieces(chunks):
        yield piece


def sized_response(
    chunks: Sequence[bytes], media_type: str, headers: dict[str, str] | None = None
) -> Response:
    """A body of known chunks: one message when small, else streamed in pieces."""
    size = sum(len(chunk) for chunk in chunks)
    if size <= PIECE_BYTES:
        return Response(b"".join(chunks), media_type=media_type, headers=headers)
    headers = {**(headers or {}), "Content-Length": str(size)}
    return StreamingResponse(_send_pieces(chunks), media_type=media_type, headers=headers)
