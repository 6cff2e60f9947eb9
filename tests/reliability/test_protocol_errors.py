"""Requests uvicorn's parser cannot read get problem+json too, from a real server over raw
sockets (loopback, every read bounded by a timeout)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from tests.helpers import running_server
from tests.reliability.test_real_server_limits import address

UNPARSEABLE = {
    "bad chunk size": b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "lowercase method": b"get /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    "100 KB request line": b"GET /healthz?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    "space in a header name": b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Name: 1\r\n\r\n",
    "TLS hello on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40,
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "unknown HTTP version": b"GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n",
}


def exchange(host: str, port: int, request: bytes) -> bytes:
    """Send one request and read until the server closes the connection (at most 10 s)."""
    received = b""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        while piece := sock.recv(65536):
            received += piece
    return received


@pytest.mark.slow
def test_unparseable_requests_get_a_problem_and_a_closed_connection(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        host, port = address(server.base_url)
        answers = {name: exchange(host, port, request) for name, request in UNPARSEABLE.items()}
        still_serving = httpx.get(f"{server.base_url}/healthz", timeout=10).status_code
    for name, answer in answers.items():
        head, _, body = answer.partition(b"\r\n\r\n")  # all of it: the server closed after
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        assert lines[0] == "HTTP/1.1 400 Bad Request", name
        assert headers["content-type"] == "application/problem+json", name
        assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
        assert int(headers["content-length"]) == len(body), name
        problem = json.loads(body)
        assert (problem["status"], problem["code"]) == (400, "malformed_request"), name
        assert problem["title"] == "The request is not valid HTTP/1.1"
    assert still_serving == 200
    # The broken chunked body reached the app before the parser failed: recorded, no traceback.
    assert '"error":"client_disconnected"' in server.log()
    assert "Traceback" not in server.log()
