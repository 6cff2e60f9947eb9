"""Closing a listener without resetting queued connections, on real sockets of this kernel."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from service.listen_queue import queued_connections, refuse_new_connections

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="a Linux socket filter")


@contextmanager
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def wait_for_queue(sock: socket.socket, length: int) -> int:
    deadline = time.monotonic() + 5
    while queued_connections(sock) != length and time.monotonic() < deadline:
        time.sleep(0.01)
    return queued_connections(sock)


def test_the_accept_queue_is_counted() -> None:
    with listener() as sock, ExitStack() as stack:
        assert queued_connections(sock) == 0
        for _ in range(3):
            stack.enter_context(socket.create_connection(sock.getsockname()))
        assert wait_for_queue(sock, 3) == 3
        accepted, _ = sock.accept()
        accepted.close()
        assert queued_connections(sock) == 2


def test_after_refusing_queued_connections_are_still_accepted_and_new_ones_never_connect() -> None:
    with listener() as sock, socket.create_connection(sock.getsockname()) as queued:
        queued.sendall(b"a request")
        assert wait_for_queue(sock, 1) == 1
        assert refuse_new_connections(sock)
        with pytest.raises(TimeoutError):
            socket.create_connection(sock.getsockname(), timeout=0.3)
        assert queued_connections(sock) == 1  # the unanswered handshake was never queued
        accepted, _ = sock.accept()
        with accepted:
            assert accepted.recv(100) == b"a request"
            accepted.sendall(b"an answer")
        assert queued.recv(100) == b"an answer"
        assert queued_connections(sock) == 0


def test_a_client_kept_waiting_is_refused_once_the_listener_closes() -> None:
    with listener() as sock:
        address = sock.getsockname()
        assert refuse_new_connections(sock)
        threading.Timer(0.2, sock.close).start()
        with pytest.raises(ConnectionRefusedError):  # its SYN, sent again, finds no listener
            socket.create_connection(address, timeout=10)


def test_other_sockets_are_left_alone() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert not refuse_new_connections(left)
        assert queued_connections(left) == 0
