"""Slow and oversized clients against a real server: heads and bodies bounded in size and time.

Every test here is bounded: a fixed number of loopback connections, timeouts of a
few seconds set for the test, and waits that give up after a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import Digits, ServerProcess, running_server
from tests.reliability.raw_http import (
    address,
    closed_by_server,
    post_head,
    read_response,
    rss_bytes,
)

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
SLOWLORIS = 150
STALLED = 100
MB = 1024 * 1024


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(address(server.base_url), timeout=10)


@contextmanager
def slowloris(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that each send a head one byte every 0.2 s, never finishing it."""
    with ExitStack() as stack:
        socks = [stack.enter_context(connect(server)) for _ in range(count)]
        stop = threading.Event()

        def trickle() -> None:
            for sock in socks:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            while not stop.wait(0.2):
                for sock in socks:
                    # Closed by the server: as it should be, in time.
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X")

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            yield socks
        finally:
            stop.set()
            thread.join(timeout=10)


def timed_classify(client: httpx.Client, url: str, png: bytes) -> float:
    started = time.perf_counter()
    response = client.post(url, content=png, headers={"content-type": "image/png"})
    assert response.status_code == 200
    return time.perf_counter() - started


@pytest.mark.slow
def test_slow_heads_and_stalled_bodies_are_cut_off_while_others_are_served(
    tmp_path: Path, digits: Digits
) -> None:
    env = {
        "CNN_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "CNN_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "CNN_MAX_CONNECTIONS": "1000",
    }
    png = digits.png(0)
    with running_server(tmp_path, env=env) as server, httpx.Client(timeout=30) as client:
        url = f"{server.base_url}/v1/classify"
        timed_classify(client, url, png)  # warm
        with slowloris(server, SLOWLORIS) as heads:
            time.sleep(0.5)
            latencies = [timed_classify(client, url, png) for _ in range(5)]
            started = time.monotonic()
            heads_closed = [closed_by_server(s, HEADER_TIMEOUT_S + 5) for s in heads]
            heads_s = time.monotonic() - started
        with ExitStack() as stack:
            bodies = [stack.enter_context(connect(server)) for _ in range(STALLED)]
            for sock in bodies:  # 30 MB declared, 4 bytes sent
                sock.sendall(post_head("/v1/classify", "image/png", 30 * MB) + b"\x89PNG")
            started = time.monotonic()
            answers = [read_response(sock, timeout=BODY_TIMEOUT_S + 10) for sock in bodies]
            bodies_s = time.monotonic() - started
            bodies_closed = [closed_by_server(s, 5) for s in bodies]
        after = timed_classify(client, url, png)
        log = server.log()
    # Served within 50 ms while 150 heads trickle in (a generous bound for a lone digit).
    assert statistics.median(latencies) < 0.05, latencies
    assert all(heads_closed) and heads_s < HEADER_TIMEOUT_S + 5
    assert {status for status, _ in answers} == {408}
    assert {json.loads(body)["code"] for _, body in answers} == {"body_timeout"}
    assert all(bodies_closed) and bodies_s < BODY_TIMEOUT_S + 10
    assert after < 30
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_huge_header_line_is_refused_while_it_arrives(tmp_path: Path) -> None:
    """A 200 MB header line, streamed: refused after about the limit, memory stays flat."""
    offered = 200 * MB
    chunk = b"a" * (64 * 1024)
    with running_server(tmp_path) as server:
        pid = server.process.pid
        before = rss_bytes(pid)
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
            sent = 0
            try:
                while sent < offered:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # the server answered and closed
                pass
            status, body = read_response(sock, timeout=10)
        grown = rss_bytes(pid) - before
        health = httpx.get(f"{server.base_url}/healthz", timeout=10)
    assert status == 431 and json.loads(body)["code"] == "headers_too_large"
    assert sent < 16 * MB  # stopped long before the end (socket buffers hold a few MB)
    assert grown < 32 * MB, grown
    assert health.status_code == 200


@pytest.mark.slow
def test_connections_over_the_cap_get_503(tmp_path: Path, digits: Digits) -> None:
    env = {"CNN_MAX_CONNECTIONS": "20"}
    with running_server(tmp_path, env=env) as server, ExitStack() as stack:
        idle = [stack.enter_context(connect(server)) for _ in range(20)]
        time.sleep(0.3)
        over = httpx.get(f"{server.base_url}/healthz", timeout=10)
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        below = httpx.get(f"{server.base_url}/healthz", timeout=10)
    assert over.status_code == 503
    assert below.status_code == 200
