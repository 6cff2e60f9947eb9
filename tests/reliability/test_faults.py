"""Faults inside the service: deadlines, clients that go away, failing forward passes.

The probe model (probe.py) records every image it computes, and can hold a forward
pass behind a gate: with the only worker held, the test decides exactly what is
queued, and proves what was, and what was never, computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.batch_run import WorkItem
from service.batching import Batcher
from service.local_backend import LocalBackend
from tests.reliability.conftest import Served, ServedFactory
from tests.reliability.probe import (
    ABORT_LEVEL,
    FAIL_LEVEL,
    GATE_LEVEL,
    SECRET,
    WIDE_LEVEL,
    ProbeNet,
    grey_png,
    probe_settings,
)


async def classify(client: httpx.AsyncClient, level: int) -> httpx.Response:
    return await client.post(
        "/v1/classify?top_k=3", content=grey_png(level), headers={"content-type": "image/png"}
    )


async def wait_until(condition: Callable[[], bool], limit_s: float = 20.0) -> None:
    """Poll: the conditions are set by worker threads, which have no asyncio event to await."""
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def hold_worker(served: Served) -> asyncio.Task[httpx.Response]:
    """Send a request that keeps the only worker busy until ProbeNet.gate is set."""
    task = asyncio.create_task(classify(served.client, GATE_LEVEL))
    await wait_until(lambda: GATE_LEVEL in ProbeNet.computed())
    return task


def probe_batcher(served: Served) -> Batcher:
    backend = served.state.registry.get("probe").backend
    assert isinstance(backend, LocalBackend)
    return backend.batcher


def unsettled_work_items() -> list[WorkItem]:
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is WorkItem and not o.future.done()]


def assert_no_internals(response: httpx.Response) -> None:
    text = response.text
    for leak in (SECRET, "Traceback", "RuntimeError", "IndexError", 'File "'):
        assert leak not in text, text


async def test_a_request_past_its_deadline_gets_504_and_is_never_computed(
    served_app: ServedFactory, probe_card: Path
) -> None:
    async with served_app(**probe_settings(probe_card, request_timeout_s=0.5)) as served:
        gated = await hold_worker(served)
        late = await classify(served.client, 77)  # queued behind the held worker
        assert late.status_code == 504, late.text
        assert late.json()["code"] == "timeout"
        ProbeNet.gate.set()
        assert (await gated).status_code == 504  # its own deadline passed while it ran
        await wait_until(lambda: probe_batcher(served).idle)
        after = await classify(served.client, 99)
        assert after.status_code == 200, after.text
    computed = ProbeNet.computed()
    assert 77 not in computed
    assert computed.count(99) == 1
    assert unsettled_work_items() == []


async def test_a_client_that_goes_away_neither_poisons_its_batch_nor_leaks(
    served_app: ServedFactory, probe_card: Path
) -> None:
    async with served_app(**probe_settings(probe_card)) as served:
        batcher = probe_batcher(served)
        gated = await hold_worker(served)
        gone = asyncio.create_task(classify(served.client, 50))
        kept = asyncio.create_task(classify(served.client, 60))
        await wait_until(lambda: batcher.queue_depth == 2)
        gone.cancel()  # the client disconnects: under ASGI its request task is cancelled
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        ProbeNet.gate.set()
        assert (await gated).status_code == 200
        answer = await kept
        assert answer.status_code == 200, answer.text
        await wait_until(lambda: batcher.idle)
        assert unsettled_work_items() == []
        assert batcher.queue_depth == 0
        again = await asyncio.gather(*(classify(served.client, v) for v in (10, 20, 30)))
        assert [r.status_code for r in again] == [200, 200, 200]
    assert 50 not in ProbeNet.computed()
    assert [60] in ProbeNet.calls  # its batch ran without the departed request


async def test_a_failing_input_fails_only_its_own_request(
    served_app: ServedFactory, probe_card: Path, caplog: pytest.LogCaptureFixture
) -> None:
    levels = [10, FAIL_LEVEL, 30, 40, 50]
    async with served_app(**probe_settings(probe_card, max_batch_size=8)) as served:
        gated = await hold_worker(served)
        tasks = [asyncio.create_task(classify(served.client, level)) for level in levels]
        await wait_until(lambda: probe_batcher(served).queue_depth == len(levels))
        with caplog.at_level(logging.ERROR, logger="service.batching"):
            ProbeNet.gate.set()
            responses = await asyncio.gather(*tasks)
        assert (await gated).status_code == 200
        after = await classify(served.client, 90)  # the only worker thread survived
    statuses = {level: r.status_code for level, r in zip(levels, responses, strict=True)}
    assert statuses == {10: 200, FAIL_LEVEL: 500, 30: 200, 40: 200, 50: 200}
    failed = responses[levels.index(FAIL_LEVEL)]
    assert failed.json()["code"] == "inference_failed"
    assert failed.headers["content-type"] == "application/problem+json"
    assert_no_internals(failed)
    assert SECRET in caplog.text  # the cause stays in the server's log
    assert after.status_code == 200
    # One batch held all five; bisection re-ran the healthy ones without the poisoned one.
    assert sorted(levels) in [sorted(call) for call in ProbeNet.calls]
    healthy = [call for call in ProbeNet.calls if FAIL_LEVEL not in call]
    assert sorted(v for call in healthy for v in call if v in levels) == [10, 30, 40, 50]


async def test_an_unexpected_error_is_a_generic_500_with_a_request_id(
    served_app: ServedFactory, probe_card: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = probe_settings(probe_card)
    async with served_app(raise_app_exceptions=False, **settings) as served:
        with caplog.at_level(logging.ERROR):
            broken = await classify(served.client, WIDE_LEVEL)
        fine = await classify(served.client, 12)
    assert broken.status_code == 500, broken.text
    problem = broken.json()
    assert problem["code"] == "internal_error"
    assert "request id" in problem["detail"]
    assert_no_internals(broken)
    assert "IndexError" in caplog.text
    assert fine.status_code == 200


async def test_a_worker_survives_even_a_base_exception_and_answers_at_once(
    served_app: ServedFactory, probe_card: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A request timeout far beyond the test's patience: an unanswered request would fail it.
    async with served_app(**probe_settings(probe_card, request_timeout_s=600)) as served:
        with caplog.at_level(logging.ERROR, logger="service.batching"):
            async with asyncio.timeout(30):
                aborted = await classify(served.client, ABORT_LEVEL)
        after = await classify(served.client, 15)
    assert aborted.status_code == 500
    assert aborted.json()["code"] == "inference_failed"
    assert_no_internals(aborted)
    assert "ProbeAbort" in caplog.text
    assert after.status_code == 200
