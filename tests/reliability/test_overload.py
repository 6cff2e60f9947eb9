"""Overload: four times more concurrent clients than the service can hold.

The probe model holds the only worker, so capacity is exact: the queue takes
CNN_MAX_QUEUE_SIZE images and every other client must be refused at once with
503 + Retry-After, while the accepted requests still complete.
"""

from __future__ import annotations

import asyncio
import resource
from pathlib import Path

import httpx

from tests.reliability.conftest import Served, ServedFactory
from tests.reliability.probe import ProbeNet, probe_settings
from tests.reliability.test_faults import classify, hold_worker, probe_batcher, wait_until

QUEUE = 4
BATCH = 4
CLIENTS = 4 * (QUEUE + BATCH)  # four times what the worker and the queue can hold


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def overload_round(served: Served, first_level: int) -> list[httpx.Response]:
    """Hold the worker, send CLIENTS requests at once, collect the refusals, then release."""
    ProbeNet.gate.clear()
    gated = await hold_worker(served)
    tasks = [asyncio.create_task(classify(served.client, first_level + i)) for i in range(CLIENTS)]
    # Everyone beyond the queue is answered while the worker is still held: a refusal
    # waits for nothing.
    await wait_until(lambda: sum(t.done() for t in tasks) == CLIENTS - QUEUE)
    assert probe_batcher(served).queue_depth == QUEUE
    assert all(t.result().status_code == 503 for t in tasks if t.done())
    ProbeNet.gate.set()
    responses = list(await asyncio.gather(*tasks))
    assert (await gated).status_code == 200
    await wait_until(lambda: probe_batcher(served).idle)
    return responses


async def test_excess_clients_get_503_with_retry_after_and_accepted_ones_finish(
    served_app: ServedFactory, probe_card: Path
) -> None:
    settings = probe_settings(
        probe_card, max_queue_size=QUEUE, max_batch_size=BATCH, request_timeout_s=30
    )
    async with served_app(**settings) as served:
        statuses: list[list[int]] = []
        rss: list[int] = []
        for round_ in range(6):
            ProbeNet.calls.clear()
            responses = await overload_round(served, first_level=1 + round_ % 2)
            statuses.append(sorted(r.status_code for r in responses))
            for response in responses:
                if response.status_code == 503:
                    assert response.json()["code"] == "overloaded"
                    assert int(response.headers["retry-after"]) >= 1
            computed = [v for v in ProbeNet.computed() if v < 100]
            assert len(computed) == QUEUE  # exactly the accepted ones ran, each once
            rss.append(rss_bytes())
        after = await classify(served.client, 7)
    assert statuses == [[200] * QUEUE + [503] * (CLIENTS - QUEUE)] * 6
    assert after.status_code == 200
    # Memory stays bounded: rounds after the first (warm-up) add next to nothing.
    growth = (rss[-1] - rss[0]) / rss[0]
    assert growth < 0.05, f"RSS grew {growth:.1%} over five overload rounds: {rss}"
