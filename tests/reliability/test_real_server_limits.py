"""Limits against a real uvicorn process, over raw sockets: what the HTTP layer itself sees."""

from __future__ import annotations

import json
import select
import socket
from pathlib import Path

import httpx
import pytest

import models
from models.evaluate import predict
from tests.helpers import Digits, running_server
from tests.reliability.raw_http import address, read_response

LIMIT = 64 * 1024


def send_chunked_until_answered(sock: socket.socket, offered: int) -> int:
    """Send zero bytes in 4 kB chunks until the server answers; return how many were sent."""
    head = (
        b"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head)
    chunk = b"\0" * 4096
    sent = 0
    while sent < offered:
        readable, _, _ = select.select([sock], [], [], 0.005)
        if readable:
            break
        sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    return sent


@pytest.mark.slow
def test_real_server_limits_and_departing_clients(tmp_path: Path, digits: Digits) -> None:
    env = {"CNN_MAX_BODY_BYTES": str(LIMIT), "CNN_MAX_HEADER_BYTES": str(LIMIT)}
    with running_server(tmp_path, env=env) as server:
        host, port = address(server.base_url)
        offered = 64 * LIMIT
        with socket.create_connection((host, port)) as sock:
            sent = send_chunked_until_answered(sock, offered)
            status, body = read_response(sock)
        assert status == 413
        assert json.loads(body)["code"] == "payload_too_large"
        assert sent < offered // 4  # answered long before the body ended

        for request in (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (2 * LIMIT) + b"\r\n\r\n",
            b"GET /healthz?" + b"q" * (2 * LIMIT) + b" HTTP/1.1\r\nHost: t\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-H: v\r\n" * 20_000 + b"\r\n",
            b"NONSENSE\r\n\r\n",
        ):
            with socket.create_connection((host, port)) as sock:
                sock.sendall(request)
                status, _ = read_response(sock)
            assert 400 <= status < 500, request[:40]

        # Clients that send a whole request and vanish before the answer: 20 of them.
        png = digits.png(0)
        request = (
            b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(png), png)
        )
        for _ in range(20):
            with socket.create_connection((host, port)) as sock:
                sock.sendall(request)
        after = [
            httpx.post(
                f"{server.base_url}/v1/classify",
                content=digits.png(i),
                headers={"content-type": "image/png"},
                timeout=30,
            )
            for i in range(5)
        ]
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
    assert [r.status_code for r in after] == [200] * 5
    loaded = models.load(models.default_model_path())
    expected = predict(loaded.module, loaded.preprocess, digits.images[:5]).tolist()
    assert [r.json()["predictions"][0]["index"] for r in after] == expected
    assert "Traceback" not in server.log()
