"""Closing a listening TCP socket without resetting the connections queued on it.

The kernel completes handshakes on its own and queues the connections until the
server accepts them; closing the listener then resets every queued one, whose
client has already sent its request (it reads a reset, not an answer). So the
server first stops the handshakes (`refuse_new_connections`: a socket filter
that drops every packet to the listener, so a new client's SYN goes unanswered,
is sent again a second later and is refused once the port is closed), then
accepts what is already queued (`queued_connections` falls to 0), then closes.

Linux only; elsewhere both are no-ops (the listener closes as before).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Protocol

_SO_ATTACH_FILTER = 26
# One classic BPF instruction, BPF_RET|BPF_K with k=0: keep 0 bytes of every packet (drop it).
_DROP_ALL = 0x0006
# struct tcp_info: eight u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked. For a
# listener the kernel reports its accept queue's length as `unacked`.
_TCP_INFO_UNACKED_OFFSET = 24
_TCP_INFO_BYTES = 104


class ListeningSocket(Protocol):
    """A socket.socket, or asyncio's TransportSocket view of one."""

    @property
    def family(self) -> int: ...

    def setsockopt(self, level: int, optname: int, value: bytes, /) -> None: ...

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def _is_tcp_on_linux(sock: ListeningSocket) -> bool:
    return sys.platform == "linux" and sock.family in (socket.AF_INET, socket.AF_INET6)


def refuse_new_connections(sock: ListeningSocket) -> bool:
    """Stop the kernel completing handshakes on `sock`; False where it cannot be done."""
    if not _is_tcp_on_linux(sock):
        return False
    program = (ctypes.c_uint64 * 1)(_DROP_ALL)  # copied by the kernel when attached
    try:
        sock.setsockopt(
            socket.SOL_SOCKET, _SO_ATTACH_FILTER, struct.pack("@HP", 1, ctypes.addressof(program))
        )
    except OSError:
        return False
    return True


def queued_connections(sock: ListeningSocket) -> int:
    """Connections the kernel has accepted on `sock` that the server has not (0 if unknown)."""
    if not _is_tcp_on_linux(sock):
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except OSError:
        return 0
    return int(struct.unpack_from("I", info, _TCP_INFO_UNACKED_OFFSET)[0])
