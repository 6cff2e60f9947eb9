"""Faults of a real `cnn-serve --workers 2`: SIGTERM, and any one of its processes killed.

The supervisor owns the listening socket and its children: a drained pod exits 0
having answered what it accepted, a dead worker or engine is replaced while the
rest keeps answering (or refuses in a problem, never hangs), and a killed
supervisor takes every child with it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

import models
from tests.e2e.pod import (
    CLASSIFY,
    WORKER_ARGS,
    Pod,
    classify_one,
    is_zombie,
    pod_now,
    port_is_free,
    problem_code,
    scrape,
    scrape_counting,
    served_by,
    started_by,
    total,
    whole_pod,
)
from tests.helpers import Digits, free_port, running_server
from tests.reliability.test_shutdown import CLIENTS, Outcome, slow_checkpoint, start_clients
from tests.reliability.test_stalled_uploads import wait_for
from tests.service.test_metrics import Samples

SLOW_ENV = {
    "CNN_DEVICE": "cpu",  # slow enough for requests to be in flight, on any machine
    "CNN_PRECISION": "fp32",  # answers comparable with the model's own in this process
    "CNN_MAX_BATCH_SIZE": "4",
    "CNN_TORCH_THREADS": "1",
    "CNN_REQUEST_TIMEOUT_S": "60",
}
CLIENT_TIMEOUT_S = 20.0  # well below the request timeout: a hang fails the test


def attempt(base_url: str, png: bytes) -> str:
    """One classification on a new connection: its outcome, as test_shutdown names them."""
    try:
        return problem_code(classify_one(base_url, png, timeout=60))
    except httpx.ConnectError:
        return "refused"
    except httpx.HTTPError as exc:
        return f"lost: {type(exc).__name__}"


@pytest.mark.slow
def test_sigterm_under_load_finishes_every_accepted_request_and_leaves_no_process(
    tmp_path: Path, digits: Digits
) -> None:
    env = {
        "CNN_MODELS": f"slow={slow_checkpoint(tmp_path)}",
        "CNN_SHUTDOWN_DRAIN_S": "1.5",
        "CNN_SHUTDOWN_GRACE_S": "60",
        **SLOW_ENV,
    }
    outcomes: list[Outcome] = []
    stop = threading.Event()
    with running_server(tmp_path, env=env, args=WORKER_ARGS) as server:
        pod = whole_pod(server)
        url = f"{server.base_url}{CLASSIFY}"
        threads = start_clients(url, digits, outcomes, stop)
        assert wait_for(lambda: sum(o.result == "200" for o in outcomes) >= 2 * CLIENTS, 120)
        sigterm_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # The supervisor passes the signal on: the workers answer /readyz 503 while draining.
        readiness: list[httpx.Response] = []

        def draining() -> bool:
            readiness.append(httpx.get(f"{server.base_url}/readyz", timeout=10))
            return readiness[-1].status_code != 200

        assert wait_for(draining, 10)
        for thread in threads:
            thread.join(timeout=120)
        stop.set()
        exit_code = server.process.wait(timeout=120)
        log = server.log()
    assert exit_code == 0, log[-2000:]
    assert (readiness[-1].status_code, readiness[-1].json()) == (503, {"status": "draining"})
    expected = ("200", "503 not_ready", "refused")
    # Anything else, with its times from the signal: when it started, when it ended.
    lost = [
        (o.started - sigterm_at, o.finished - sigterm_at, o.result)
        for o in outcomes
        if o.result not in expected
    ]
    assert not lost, lost
    finished_after = [o for o in outcomes if o.started < sigterm_at < o.finished]
    assert finished_after and any(o.result == "200" for o in finished_after)
    assert all(o.result in ("200", "503 not_ready") for o in finished_after)
    assert "draining" in log and "Cancel" not in log and "Traceback" not in log
    assert started_by(pod.supervisor) == set()
    assert port_is_free(server.base_url)


@pytest.mark.slow
def test_connections_after_the_drain_are_refused_never_reset(
    tmp_path: Path, digits: Digits
) -> None:
    """Closed with connections still in the kernel's accept queue, the listener reset them
    (ReadError here in about one run in six): they are accepted and answered first."""
    png = digits.png(0)
    with running_server(tmp_path, env={"CNN_SHUTDOWN_DRAIN_S": "0.5"}, args=WORKER_ARGS) as server:
        server.process.send_signal(signal.SIGTERM)
        results = []
        while server.process.poll() is None:  # one connection after another until it exits
            results.append(attempt(server.base_url, png))
        exit_code = server.process.wait()
    assert exit_code == 0
    assert "503 not_ready" in results  # the drain answered
    assert set(results) <= {"200", "503 not_ready", "refused"}, sorted(set(results))


def shared_memory_bytes(pod: Pod) -> int:
    """Bytes allocated in the pod's run directory (its arenas), its metric files aside."""
    files = (path for path in pod.run_dir.rglob("*") if path.is_file())
    return sum(path.stat().st_blocks * 512 for path in files if pod.metrics_dir not in path.parents)


@pytest.mark.slow
def test_a_killed_worker_is_replaced_while_the_other_answers(
    tmp_path: Path, digits: Digits
) -> None:
    outcomes: list[str] = []
    with running_server(tmp_path, args=WORKER_ARGS) as server:
        before = whole_pod(server)
        held = shared_memory_bytes(before)

        def classify() -> None:
            png = digits.png(len(outcomes))
            outcomes.append(problem_code(classify_one(server.base_url, png)))

        def both_served() -> bool:
            classify()
            return min(served_by(before, worker) for worker in before.workers) > 0

        assert wait_for(both_served, 60)
        victim = min(before.workers)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: is_zombie(victim), 10)  # dead: it accepts nothing more
        served_before_the_kill = len(outcomes)

        def replaced() -> bool:  # and the replacement has answered a request
            classify()
            now = pod_now(server.process.pid)
            new = now.workers - before.workers
            return len(now.workers) == 2 and len(new) == 1 and served_by(now, min(new)) > 0

        assert wait_for(replaced, 60), server.log()[-3000:]
        after = pod_now(server.process.pid)
        samples = scrape_counting(server.base_url, len(outcomes), endpoint=CLASSIFY)
        # Read before the pod exits with its files.
        by_victim = served_by(after, victim)
        answered = by_victim + sum(served_by(after, worker) for worker in after.workers)
        held_after = shared_memory_bytes(after)
        log = server.log()
    assert len(outcomes) > served_before_the_kill and set(outcomes) == {"200"}
    assert after.engine == before.engine  # the engine never noticed
    assert victim not in after.workers
    assert len(after.workers & before.workers) == 1  # the other worker kept running
    # The dead worker's counts stay in the sum: every 200 since the start is there.
    assert by_victim > 0
    assert total(samples, "cnn_requests_total", endpoint=CLASSIFY, code="200") == answered
    assert total(samples, "cnn_images_total") == answered == len(outcomes)  # one image each
    assert "HTTP worker ended; starting another" in log
    assert held > 0 and held_after == held  # the dead worker's arena went with it


@pytest.mark.slow
def test_a_killed_engine_fails_requests_at_once_and_comes_back(
    tmp_path: Path, digits: Digits
) -> None:
    card = slow_checkpoint(tmp_path)
    loaded = models.load(card)
    with torch.inference_mode():
        expected = int(loaded.module(loaded.preprocess(digits.images[9])[None]).argmax())
    body = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(4)]
    with running_server(tmp_path, env={"CNN_MODELS": f"slow={card}", **SLOW_ENV},
                        args=WORKER_ARGS) as server:  # fmt: skip
        base = server.base_url
        pod = whole_pod(server)
        with ThreadPoolExecutor(16) as pool:
            in_flight = [
                pool.submit(httpx.post, f"{base}{CLASSIFY}", files=body, timeout=CLIENT_TIMEOUT_S)
                for _ in range(16)
            ]
            assert wait_for(lambda: total(scrape(base), "cnn_queue_depth") > 0, 30)
            os.kill(pod.engine, signal.SIGKILL)
            cut_off = [problem_code(future.result()) for future in in_flight]
        # While the engine restarts, the workers' counters are still scraped.
        during_outage = scrape_counting(base, len(cut_off), endpoint=CLASSIFY)
        during: list[str] = []
        readiness: list[int] = []

        def back() -> bool:
            readiness.append(httpx.get(f"{base}/readyz", timeout=CLIENT_TIMEOUT_S).status_code)
            response = classify_one(base, digits.png(9), timeout=CLIENT_TIMEOUT_S)
            during.append(problem_code(response))
            if response.status_code == 200:
                assert response.json()["predictions"][0]["index"] == expected
            return during[-10:] == ["200"] * 10  # both workers reconnected

        assert wait_for(back, 120), server.log()[-3000:]
        after = pod_now(server.process.pid)
        samples = scrape_counting(base, len(cut_off) + len(during), endpoint=CLASSIFY)
    assert set(cut_off) <= {"200", "503 engine_unavailable", "503 not_ready"}, cut_off
    assert "503 engine_unavailable" in cut_off
    assert during[0] in ("503 engine_unavailable", "503 not_ready")
    assert set(during) <= {"200", "503 engine_unavailable", "503 not_ready"}, during
    assert readiness[0] == 503 and readiness[-1] == 200
    assert after.engine not in (0, pod.engine) and after.workers == pod.workers
    refused_first = [o for o in cut_off if o != "200"]
    assert total(during_outage, "cnn_requests_total", endpoint=CLASSIFY, code="503") == len(
        refused_first
    )
    refused = [o for o in cut_off + during if o != "200"]
    assert total(samples, "cnn_rejected_total", reason="not_ready") == len(refused)
    assert total(samples, "cnn_requests_total", endpoint=CLASSIFY, code="503") == len(refused)


@pytest.mark.slow
def test_a_killed_supervisor_takes_every_child_with_it(tmp_path: Path, digits: Digits) -> None:
    with running_server(tmp_path, args=WORKER_ARGS) as server:
        pod = whole_pod(server)
        assert classify_one(server.base_url, digits.png(4)).status_code == 200
        assert started_by(pod.supervisor) == {pod.engine, *pod.workers}
        server.process.kill()
        server.process.wait()
        assert wait_for(lambda: not started_by(pod.supervisor), 15), started_by(pod.supervisor)
        assert wait_for(lambda: port_is_free(server.base_url), 5)
        # Its run folder (sockets, arenas, metric files, in memory) goes with the engine.
        assert wait_for(lambda: not pod.run_dir.exists(), 5), sorted(pod.run_dir.iterdir())


def metrics_port_scrape(tmp_path: Path, digits: Digits) -> Samples:
    """Ten classifications, then a scrape of CNN_METRICS_PORT (the main port has no /metrics)."""
    port = free_port()
    env = {"CNN_METRICS_PORT": str(port)}
    with running_server(tmp_path, env=env, args=WORKER_ARGS) as server:
        pod = whole_pod(server)
        answers = [classify_one(server.base_url, digits.png(i)) for i in range(10)]
        assert httpx.get(f"{server.base_url}/metrics").status_code == 404
        samples = scrape_counting(f"http://127.0.0.1:{port}", 10, endpoint=CLASSIFY)
        assert pod_now(pod.supervisor) == pod  # no process restarted
    assert [a.json()["predictions"][0]["index"] for a in answers] == digits.labels[:10].tolist()
    return samples


@pytest.mark.slow
def test_a_separate_metrics_port_counts_for_the_whole_pod(tmp_path: Path, digits: Digits) -> None:
    samples = metrics_port_scrape(tmp_path, digits)
    assert total(samples, "cnn_requests_total", endpoint=CLASSIFY, code="200") == 10
    assert total(samples, "cnn_images_total") == 10


@pytest.mark.slow
def test_a_separate_metrics_port_says_the_pod_is_ready(tmp_path: Path, digits: Digits) -> None:
    """As one process's metrics port does (tests/service/test_metrics.py)."""
    assert total(metrics_port_scrape(tmp_path, digits), "cnn_ready") == 1
