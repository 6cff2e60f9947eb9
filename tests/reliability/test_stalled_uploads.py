"""Uploads that stall or stop halfway, against a real server: nobody else waits on them."""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.helpers import Digits, running_server
from tests.reliability.raw_http import address, open_deleted_files, post_head, read_response

DELAY_MS = 200
MB = 1024 * 1024


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


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.slow
def test_stalled_and_aborted_multipart_uploads_leave_no_spool_files(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    part = b"\0" * (2 * MB)  # past Starlette's 1 MB: spooled to a file
    head, first = multipart_head_and_part(part)
    env = {
        "CNN_TEMP_DIR": str(spool),
        "CNN_BODY_TIMEOUT_S": "2",
        "CNN_MAX_SPOOL_BYTES": str(7 * MB),  # room for three stalled uploads, not four
    }
    with running_server(tmp_path, env=env) as server:
        pid = server.process.pid
        with ExitStack() as stack:
            socks = [
                stack.enter_context(socket.create_connection(address(server.base_url)))
                for _ in range(3)
            ]
            for sock in socks:
                sock.sendall(head + first)  # and stall
            assert wait_for(lambda: open_deleted_files(pid, spool) == 3, 10)
            with socket.create_connection(address(server.base_url)) as fourth:
                fourth.sendall(head + first)
                status, body = read_response(fourth, timeout=10)
            held_at_limit = open_deleted_files(pid, spool)
            started = time.monotonic()
            # The stalled three: 408 within the body timeout, their files gone.
            answers = [read_response(sock, timeout=15)[0] for sock in socks]
            cleared_s = time.monotonic() - started
        held_after_stall = open_deleted_files(pid, spool)
        for _ in range(5):  # and uploads that stop halfway and disconnect
            with socket.create_connection(address(server.base_url)) as sock:
                sock.sendall(head + first)
                time.sleep(0.2)
        cleared = wait_for(lambda: open_deleted_files(pid, spool) == 0, 5)
        log = server.log()
    assert status == 503 and json.loads(body)["code"] == "overloaded"
    assert held_at_limit == 3
    assert answers == [408] * 3 and cleared_s < 10
    assert held_after_stall == 0 and cleared
    assert "Traceback" not in log
