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
