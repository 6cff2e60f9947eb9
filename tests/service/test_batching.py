"""The batcher without HTTP: cuts, ordering, deadlines, errors, overload."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import models
from service.batch_sizes import warm_up_sizes
from service.batching import Batcher
from service.devices import plan_for
from service.engine import Engine, EngineOutput
from service.errors import InferenceFailed, Overloaded, RequestTimeout


class RecordingRunner:
    """A small real runner: 'probabilities' echo each row's first pixel; batches are recorded."""

    device_name = "cpu"

    def __init__(
        self, *, delay: float = 0.0, fail_on: float | None = None, oom_over: int | None = None
    ):
        self.delay = delay
        self.fail_on = fail_on
        self.oom_over = oom_over
        self.batches: list[list[float]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def run(
        self, inputs: Sequence[torch.Tensor], capture: frozenset[str] = frozenset()
    ) -> EngineOutput:
        batch = torch.cat(list(inputs)).float()
        values = batch.flatten(1)[:, 0]
        self.started.set()
        self.release.wait(10)
        if self.oom_over is not None and len(values) > self.oom_over:
            raise torch.cuda.OutOfMemoryError("fake: batch too large")
        if self.fail_on is not None and bool((values == self.fail_on).any()):
            raise RuntimeError("fake: poisoned input")
        self.batches.append(values.tolist())
        time.sleep(self.delay)
        scores = np.stack([values.numpy(), -values.numpy()], axis=1).astype(np.float32)
        return EngineOutput(probabilities=scores, logits=scores, seconds=self.delay)


def pixels(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1)


def make(runner: RecordingRunner, **kwargs: float) -> Batcher:
    options = {"max_batch_size": 4, "max_delay_s": 0.0, "max_queue_images": 64, **kwargs}
    batcher = Batcher("test", [runner], **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


def later(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


async def test_answers_follow_request_order_and_batches_respect_max_size() -> None:
    runner = RecordingRunner()
    runner.release.clear()
    batcher = make(runner)
    first = asyncio.create_task(batcher.submit(pixels(100), deadline=later()))
    await asyncio.to_thread(runner.started.wait, 5)  # the worker is busy: the rest queue up
    rest = [asyncio.create_task(batcher.submit(pixels(i), deadline=later())) for i in range(10)]
    await asyncio.sleep(0.05)
    runner.release.set()
    results = await asyncio.gather(first, *rest)
    assert [r.probabilities[0, 0] for r in results] == [100, *range(10)]
    assert runner.batches[0] == [100]
    assert runner.batches[1:] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # cut by size, in order
    assert batcher.stop(5)


async def test_a_requests_own_images_share_one_pass_beyond_the_batch_size() -> None:
    runner = RecordingRunner()
    runner.release.clear()
    batcher = make(runner, max_request_pass=8)
    first = asyncio.create_task(batcher.submit(pixels(100), deadline=later()))
    await asyncio.to_thread(runner.started.wait, 5)  # the worker is busy: the rest queue up
    big = asyncio.create_task(batcher.submit(pixels(*range(10)), deadline=later()))
    small = [
        asyncio.create_task(batcher.submit(pixels(20 + i, 30 + i), deadline=later()))
        for i in range(3)
    ]
    await asyncio.sleep(0.05)
    runner.release.set()
    answers = await asyncio.gather(big, *small)
    assert answers[0].probabilities[:, 0].tolist() == list(range(10))
    # 10 images: passes of 8 and 2; then requests gathered up to the batch size (4) only.
    assert runner.batches[1:] == [
        list(range(8)),
        [8, 9, 20, 30],
        [21, 31, 22, 32],
    ]
    await first
    assert batcher.stop(5)


async def test_lone_request_pays_no_delay_window() -> None:
    runner = RecordingRunner()
    batcher = make(runner, max_delay_s=60.0)  # a huge window: only taken when others are incoming
    result = await asyncio.wait_for(batcher.submit(pixels(7), deadline=later()), timeout=10)
    assert result.batch_size == 1
    assert batcher.stop(5)


async def test_worker_waits_for_incoming_requests_within_the_delay() -> None:
    runner = RecordingRunner()
    batcher = make(runner, max_delay_s=5.0)
    with batcher.incoming() as arrival:  # another request is being decoded
        first = asyncio.create_task(batcher.submit(pixels(1), deadline=later()))
        await asyncio.sleep(0.1)
        assert not first.done()  # held open for its company
        second = asyncio.create_task(batcher.submit(pixels(2), deadline=later(), arrival=arrival))
        results = await asyncio.gather(first, second)
    assert runner.batches == [[1, 2]]
    assert [r.batch_size for r in results] == [2, 2]
    assert batcher.stop(5)


async def test_instances_waiting_for_company_together_share_the_queue() -> None:
    runners = [RecordingRunner(), RecordingRunner()]
    batcher = Batcher(
        "test",
        runners,
        max_batch_size=4,
        max_delay_s=5.0,
        max_queue_images=64,  # type: ignore[arg-type]
    )
    batcher.start()
    for round_ in range(20):  # both instances wait for company; one takes the batch
        with batcher.incoming() as arrival:
            first = asyncio.create_task(batcher.submit(pixels(round_), deadline=later()))
            await asyncio.sleep(0.01)
            second = asyncio.create_task(
                batcher.submit(pixels(round_ + 100), deadline=later(), arrival=arrival)
            )
            results = await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
        assert [r.probabilities[0, 0] for r in results] == [round_, round_ + 100]
    ran = sorted(value for runner in runners for batch in runner.batches for value in batch)
    assert ran == sorted([*range(20), *range(100, 120)])  # each image computed once
    assert batcher.stop(5)  # every instance's thread still alive to stop


def with_helper(instance: RecordingRunner, helper: RecordingRunner) -> Batcher:
    batcher = Batcher(
        "test",
        [instance],  # type: ignore[list-item]
        helpers=[helper],  # type: ignore[list-item]
        max_batch_size=4,
        max_delay_s=0.0,
        max_queue_images=256,
    )
    batcher.start()
    return batcher


async def test_a_helper_stays_idle_while_the_instance_keeps_up() -> None:
    instance, helper = RecordingRunner(), RecordingRunner()
    batcher = with_helper(instance, helper)
    for value in range(40):  # one request at a time: never a full batch waiting
        result = await batcher.submit(pixels(value), deadline=later())
        assert result.probabilities[0, 0] == value
    # Bursts of two full batches: batches wait, but the quick instance is seldom busy.
    for burst in range(10):
        values = range(100 + 8 * burst, 108 + 8 * burst)
        results = await asyncio.gather(
            *(batcher.submit(pixels(v), deadline=later()) for v in values)
        )
        assert [r.probabilities[0, 0] for r in results] == list(values)
    assert helper.batches == []
    assert sum(len(batch) for batch in instance.batches) == 40 + 80
    assert batcher.stop(5)


async def test_a_helper_runs_full_batches_while_the_instance_is_always_busy() -> None:
    instance, helper = RecordingRunner(delay=0.02), RecordingRunner(delay=0.02)
    batcher = with_helper(instance, helper)
    values = list(range(200))
    results = await asyncio.gather(*(batcher.submit(pixels(v), deadline=later()) for v in values))
    assert [r.probabilities[0, 0] for r in results] == values
    assert helper.batches and all(len(batch) == 4 for batch in helper.batches)
    ran = sorted(v for runner in (instance, helper) for batch in runner.batches for v in batch)
    assert ran == values  # each image computed once, by one of the two
    assert batcher.stop(5)  # the helper's thread ends too
    assert batcher.idle


async def test_delay_cut_when_company_never_comes() -> None:
    runner = RecordingRunner()
    batcher = make(runner, max_delay_s=0.05)
    with batcher.incoming():  # announced but never submitted
        result = await asyncio.wait_for(batcher.submit(pixels(3), deadline=later()), timeout=10)
    assert result.batch_size == 1
    assert batcher.stop(5)


async def test_large_request_is_split_and_reassembled_in_order() -> None:
    runner = RecordingRunner()
    batcher = make(runner)
    result = await batcher.submit(pixels(*range(10)), deadline=later())
    assert result.probabilities[:, 0].tolist() == list(range(10))
    assert all(len(batch) <= 4 for batch in runner.batches)
    assert batcher.stop(5)


async def test_error_fails_only_the_offending_request() -> None:
    runner = RecordingRunner(fail_on=13)
    runner.release.clear()
    batcher = make(runner, max_batch_size=8)
    blocker = asyncio.create_task(batcher.submit(pixels(0), deadline=later()))
    await asyncio.to_thread(runner.started.wait, 5)
    tasks = [
        asyncio.create_task(batcher.submit(pixels(v), deadline=later())) for v in (11, 12, 13, 14)
    ]
    await asyncio.sleep(0.05)
    runner.release.set()
    outcomes = await asyncio.gather(blocker, *tasks, return_exceptions=True)
    assert isinstance(outcomes[3], InferenceFailed)
    assert [o.probabilities[0, 0] for i, o in enumerate(outcomes) if i != 3] == [0, 11, 12, 14]  # type: ignore[union-attr]
    # the worker survived
    assert (await batcher.submit(pixels(5), deadline=later())).probabilities[0, 0] == 5
    assert batcher.stop(5)


async def test_out_of_memory_splits_the_batch_in_halves() -> None:
    runner = RecordingRunner(oom_over=2)
    runner.release.clear()
    batcher = make(runner, max_batch_size=8)
    blocker = asyncio.create_task(batcher.submit(pixels(0), deadline=later()))
    await asyncio.to_thread(runner.started.wait, 5)
    tasks = [asyncio.create_task(batcher.submit(pixels(v), deadline=later())) for v in range(1, 7)]
    big = asyncio.create_task(batcher.submit(pixels(7, 8, 9), deadline=later()))
    await asyncio.sleep(0.05)
    runner.release.set()
    outcomes = await asyncio.gather(blocker, *tasks, big, return_exceptions=True)
    assert [o.probabilities[0, 0] for o in outcomes[:-1]] == list(range(7))  # type: ignore[union-attr]
    assert isinstance(outcomes[-1], InferenceFailed)  # three images never fit, even alone
    assert all(len(batch) <= 2 for batch in runner.batches)
    assert batcher.stop(5)


async def test_expired_and_abandoned_requests_are_never_computed() -> None:
    runner = RecordingRunner()
    runner.release.clear()
    batcher = make(runner)
    blocker = asyncio.create_task(batcher.submit(pixels(0), deadline=later()))
    await asyncio.to_thread(runner.started.wait, 5)
    expiring = asyncio.create_task(batcher.submit(pixels(1), deadline=later(0.05)))
    abandoned = asyncio.create_task(batcher.submit(pixels(2), deadline=later()))
    kept = asyncio.create_task(batcher.submit(pixels(3), deadline=later()))
    await asyncio.sleep(0.02)
    abandoned.cancel()  # the client went away
    with pytest.raises(RequestTimeout):
        await expiring
    runner.release.set()
    assert (await kept).probabilities[0, 0] == 3
    await blocker
    assert runner.batches == [[0], [3]]
    assert batcher.stop(5)


async def test_full_queue_answers_overloaded_at_once() -> None:
    runner = RecordingRunner()
    runner.release.clear()
    batcher = make(runner, max_queue_images=2)
    blocker = asyncio.create_task(batcher.submit(pixels(0), deadline=later()))
    await asyncio.to_thread(runner.started.wait, 5)
    queued = [asyncio.create_task(batcher.submit(pixels(v), deadline=later())) for v in (1, 2)]
    await asyncio.sleep(0.02)
    with pytest.raises(Overloaded) as refused:
        await batcher.submit(pixels(3), deadline=later())
    assert refused.value.headers["Retry-After"] == "1"
    runner.release.set()
    await asyncio.gather(blocker, *queued)
    assert batcher.stop(5)


async def test_stop_finishes_queued_work() -> None:
    runner = RecordingRunner(delay=0.01)
    batcher = make(runner, max_batch_size=1)
    tasks = [asyncio.create_task(batcher.submit(pixels(v), deadline=later())) for v in range(5)]
    await asyncio.sleep(0)
    stopped = await asyncio.to_thread(batcher.stop, 10)
    assert stopped
    results = await asyncio.gather(*tasks)
    assert [r.probabilities[0, 0] for r in results] == list(range(5))


async def test_real_engine_forms_batches_under_32_concurrent_clients(digits: object) -> None:
    loaded = models.load(models.default_model_path())
    sizes: list[int] = []

    class Observer:
        def batch_done(
            self, *, size: int, seconds: float, device: str, queue_waits: Sequence[float]
        ) -> None:
            sizes.append(size)

        def batch_failed(self, *, kind: str) -> None:
            pass

    engine = Engine(loaded, plan_for("cpu", "fp32"))
    batcher = Batcher(
        "mnist",
        [engine],
        max_batch_size=32,
        max_delay_s=0.005,
        max_queue_images=1024,
        observer=Observer(),
    )
    batcher.start()
    split = digits  # tests.helpers.Digits
    batch = torch.stack(
        [torch.from_numpy(loaded.preprocess.to_uint8(img)) for img in split.images[:256]]
    )  # type: ignore[attr-defined]
    results = await asyncio.gather(
        *(batcher.submit(batch[i : i + 1], deadline=later()) for i in range(256))
    )
    with torch.inference_mode():
        expected = loaded.module(loaded.preprocess.normalize(batch)).argmax(1).tolist()
    assert [int(r.probabilities.argmax()) for r in results] == expected
    assert sum(sizes) == 256
    assert max(sizes) > 1  # requests really shared forward passes
    assert batcher.stop(5)


def test_warm_up_buckets() -> None:
    assert warm_up_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert warm_up_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert warm_up_sizes(1) == [1]
