"""Uploads that stall or stop halfway, against a real server: nobody else waits on them."""

from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import Digits, running_server
from tests.reliability.raw_http import address, post_head

DELAY_MS = 200


@pytest.mark.slow
def test_a_stalled_upload_is_no_company_for_a_lone_request(tmp_path: Path, digits: Digits) -> None:
    env = {"CNN_MAX_BATCH_DELAY_MS": str(DELAY_MS)}
    with running_server(tmp_path, env=env) as server:
        url = f"{server.base_url}/v1/classify"
        png = digits.png(0)
        with httpx.Client(timeout=30) as client:
            client.post(url, content=png, headers={"content-type": "image/png"})  # warm
            with socket.create_connection(address(server.base_url)) as stalled:
                stalled.sendall(post_head("/v1/classify", "image/png", 10_000))  # and no body
                time.sleep(0.2)  # the server has read the head
                latencies = []
                for _ in range(20):
                    started = time.perf_counter()
                    response = client.post(url, content=png, headers={"content-type": "image/png"})
                    latencies.append(time.perf_counter() - started)
                    assert response.status_code == 200
    median_ms = statistics.median(latencies) * 1000
    # Counted as company, the stalled upload made each of these wait the whole delay.
    assert median_ms < DELAY_MS / 2, latencies


def multipart_head_and_part(png: bytes, boundary: str = "b0undary") -> tuple[bytes, bytes]:
    """A multipart POST's head (declaring twice the body it will send) and its first part."""
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png
    head = post_head("/v1/classify", f"multipart/form-data; boundary={boundary}", 2 * len(part))
    return head, part


def metric_values(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in Prometheus text."""
    values = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            values[labels] = float(value)
    return values


@pytest.mark.slow
def test_clients_that_leave_mid_upload_are_499_not_500(tmp_path: Path, digits: Digits) -> None:
    png = digits.png(1) * 4  # a body in more than one piece
    raw = post_head("/v1/classify", "image/png", 2 * len(png)) + png
    multipart = b"".join(multipart_head_and_part(png))
    with running_server(tmp_path) as server:
        for request in (raw, multipart) * 3:
            with socket.create_connection(address(server.base_url)) as sock:
                sock.sendall(request)
                time.sleep(0.1)  # the server is reading the body when the client goes
        time.sleep(0.5)
        counts = metric_values(
            httpx.get(f"{server.base_url}/metrics", timeout=10).text, "cnn_requests_total"
        )
        log = server.log()
    statuses = {labels.split('code="')[1].split('"')[0]: v for labels, v in counts.items()}
    assert statuses.get("499") == 6, counts
    assert "500" not in statuses
    assert "Traceback" not in log
    assert log.count('"error":"client_disconnected"') == 6, log[-3000:]
