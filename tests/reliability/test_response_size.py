"""Large responses against a real server: capped on every route, sent in pieces."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import Digits, running_server
from tests.reliability.raw_http import address

MODEL = "/v2/models/mnist-cnn"
COUNT = 16
MB = 1024 * 1024


def infer_request(digits: Digits, outputs: list[str], binary: bool) -> dict[str, object]:
    pixels = np.stack([np.asarray(image, np.uint8) for image in digits.images[:COUNT]])
    return {
        "inputs": [
            {
                "name": "input",
                "shape": [COUNT, 1, 28, 28],
                "datatype": "UINT8",
                "data": pixels.reshape(-1).tolist(),
            }
        ],
        "outputs": [{"name": n, "parameters": {"binary_data": binary}} for n in outputs],
    }


def read_slowly(sock: socket.socket) -> tuple[bytes, bytes]:
    """A client that reads 64 KiB every 10 ms: the head, then the whole body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            v
            for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
            if k.lower() == b"content-length"
        )
    )
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "closed early"
        body += piece
        time.sleep(0.01)
    return head, body


@pytest.mark.slow
def test_responses_over_the_cap_are_413_and_large_ones_stream(
    tmp_path: Path, digits: Digits
) -> None:
    env = {"CNN_MAX_RESPONSE_BYTES": str(4 * MB)}
    with running_server(tmp_path, env=env) as server:
        base = server.base_url
        outputs = [o["name"] for o in httpx.get(base + MODEL, timeout=10).json()["outputs"]]
        over = [
            httpx.post(f"{base}{MODEL}/infer", json=infer_request(digits, outputs, b), timeout=60)
            for b in (False, True)
        ]
        request = json.dumps(infer_request(digits, outputs[:4], True)).encode()
        with socket.create_connection(address(base)) as sock:
            sock.sendall(
                f"POST {MODEL}/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(request)}\r\n\r\n".encode()
                + request
            )
            head, body = read_slowly(sock)
    for response in over:
        assert response.status_code == 413
        assert "CNN_MAX_RESPONSE_BYTES" in response.json()["error"]  # the /v2 error shape
    assert head.startswith(b"HTTP/1.1 200")
    header_length = int(
        next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"inference-header")).split(
            b":"
        )[1]
    )
    document = json.loads(body[:header_length])
    sizes = [o["parameters"]["binary_data_size"] for o in document["outputs"]]
    assert header_length + sum(sizes) == len(body) and len(body) > 1 * MB
