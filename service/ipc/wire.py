"""Frames on the engine socket: a small JSON header, then raw array bytes (never pickle).

A frame is `<II` (header length, payload length), the header (orjson), then the
payload: the arrays the header lists under "arrays" as [name, dtype, shape],
back to back. Large inputs do not travel here at all but in the sender's shared
memory arena (service.ipc.arena); the header then names their offset.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

PREFIX = struct.Struct("<II")
# The id of a frame the engine sends unasked: the served model versions, after each change.
CATALOG_ID = -2


def frame(header: dict[str, Any], arrays: Mapping[str, NDArray[Any]] | None = None) -> list[bytes]:
    """The pieces of one frame, ready for `writer.writelines`."""
    pieces: list[bytes] = []
    listed = []
    for name, array in (arrays or {}).items():
        contiguous = np.ascontiguousarray(array)
        listed.append([name, contiguous.dtype.str, list(contiguous.shape)])
        pieces.append(contiguous.tobytes())
    body = orjson.dumps({**header, "arrays": listed} if listed else header)
    size = sum(len(piece) for piece in pieces)
    return [PREFIX.pack(len(body), size), body, *pieces]


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytearray]:
    """The next frame's header and payload; IncompleteReadError at the end of the stream."""
    header_length, payload_length = PREFIX.unpack(await reader.readexactly(PREFIX.size))
    header: dict[str, Any] = orjson.loads(await reader.readexactly(header_length))
    # A bytearray: arrays viewing it are writable, as torch.from_numpy wants.
    payload = bytearray(await reader.readexactly(payload_length)) if payload_length else bytearray()
    return header, payload


def read_frame_from(stream: io.BufferedReader) -> tuple[dict[str, Any], bytearray] | None:
    """The next frame from a blocking stream (a socket's makefile("rb")); None at its end."""
    prefix = stream.read(PREFIX.size)
    if len(prefix) < PREFIX.size:
        return None
    header_length, payload_length = PREFIX.unpack(prefix)
    head = stream.read(header_length)
    payload = bytearray(payload_length)
    view, filled = memoryview(payload), 0
    while filled < payload_length:
        got = stream.readinto(view[filled:])
        if not got:
            return None
        filled += got
    if len(head) < header_length:
        return None
    header: dict[str, Any] = orjson.loads(head)
    return header, payload


def arrays_of(header: Mapping[str, Any], payload: bytearray) -> dict[str, NDArray[Any]]:
    """The payload's arrays by name, viewing the payload (no copy)."""
    arrays: dict[str, NDArray[Any]] = {}
    offset = 0
    for name, dtype, shape in header.get("arrays", ()):
        kind = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(payload, kind, count, offset).reshape(shape)
        offset += count * kind.itemsize
    return arrays
