"""Graceful shutdown: SIGTERM to a real server under load loses no accepted request."""

from __future__ import annotations

import signal
import socket
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from models import InputSpec, save_checkpoint
from models.architectures import MnistCNN
from tests.helpers import Digits, running_server
from tests.reliability.raw_http import address, post_head

CLIENTS = 16


def slow_checkpoint(tmp_path: Path) -> Path:
    """The default architecture at 256x256 input: ~80x the work per image, so batches queue up
    however fast the server answers (the clients, 16 threads in one process, must outpace it)."""
    spec = InputSpec(channels=1, height=256, width=256, mean=(0.5,), std=(0.5,))
    return save_checkpoint(
        MnistCNN(num_classes=10, in_channels=1),
        out_dir=tmp_path / "slow",
        name="slow",
        labels=tuple("0123456789"),
        input_spec=spec,
        architecture="mnist_cnn",
    )


@dataclass(frozen=True)
class Outcome:
    started: float
    finished: float
    result: str  # "200", "503 not_ready", "refused" (never connected) or "lost: <error>"


def start_clients(
    url: str, digits: Digits, outcomes: list[Outcome], stop: threading.Event
) -> list[threading.Thread]:
    """CLIENTS client loops, each sending its own digit, started."""
    threads = [
        threading.Thread(target=client_loop, args=(url, digits.png(i), outcomes, stop))
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    return threads


def client_loop(url: str, png: bytes, outcomes: list[Outcome], stop: threading.Event) -> None:
    """Send requests one after another, each on a new connection, until refused once:
    as a load balancer does, a refused client sends nothing more here."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = httpx.post(
                url, content=png, headers={"content-type": "image/png"}, timeout=60
            )
            result = str(response.status_code)
            if response.status_code != 200:
                result += " " + response.json().get("code", "")
        except httpx.ConnectError:
            result = "refused"
        except httpx.HTTPError as exc:
            result = f"lost: {type(exc).__name__}"
        outcomes.append(Outcome(started, time.monotonic(), result))
        if result != "200":
            return


@pytest.mark.slow
def test_sigterm_under_load_finishes_every_accepted_request_and_exits_0(
    tmp_path: Path, digits: Digits
) -> None:
    env = {
        "CNN_MODELS": f"slow={slow_checkpoint(tmp_path)}",
        "CNN_MAX_BATCH_SIZE": "4",
        "CNN_TORCH_THREADS": "1",
        "CNN_SHUTDOWN_DRAIN_S": "1.5",
        "CNN_SHUTDOWN_GRACE_S": "60",
        "CNN_REQUEST_TIMEOUT_S": "60",
    }
    outcomes: list[Outcome] = []
    stop = threading.Event()
    with running_server(tmp_path, env=env) as server:
        url = f"{server.base_url}/v1/classify"
        threads = start_clients(url, digits, outcomes, stop)
        while sum(o.result == "200" for o in outcomes) < 2 * CLIENTS:
            time.sleep(0.01)
        sigterm_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        readiness = httpx.get(f"{server.base_url}/readyz", timeout=10)
        for thread in threads:
            thread.join(timeout=120)
        stop.set()
        exit_code = server.process.wait(timeout=120)
        log = server.log()
    assert exit_code == 0, log[-2000:]
    assert readiness.status_code == 503
    assert readiness.json()["status"] == "draining"
    results = {o.result for o in outcomes}
    assert results <= {"200", "503 not_ready", "refused"}, results
    # Requests in progress when the signal came were finished, not cut off.
    finished_after = [o for o in outcomes if o.started < sigterm_at < o.finished]
    assert finished_after and any(o.result == "200" for o in finished_after)
    assert all(o.result in ("200", "503 not_ready") for o in finished_after)
    assert "draining" in log and "Cancel" not in log


@pytest.mark.slow
def test_sigterm_with_stalled_uploads_exits_within_the_body_timeout(tmp_path: Path) -> None:
    env = {
        "CNN_BODY_TIMEOUT_S": "3",
        "CNN_SHUTDOWN_DRAIN_S": "0.5",
        "CNN_SHUTDOWN_GRACE_S": "25",
    }
    with running_server(tmp_path, env=env) as server, ExitStack() as stack:
        for kind in ("image/png", "multipart/form-data; boundary=x") * 5:
            sock = stack.enter_context(socket.create_connection(address(server.base_url)))
            sock.sendall(post_head("/v1/classify", kind, 1_000_000) + b"--x\r\n")  # then nothing
        time.sleep(0.5)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=60)
        took = time.monotonic() - started
        log = server.log()
    assert exit_code == 0
    assert took < 3 + 0.5 + 4, took  # the body timeout and the drain, not the 25 s grace
    assert "Traceback" not in log and '"level":"error"' not in log
