"""Dynamic batching: requests from the event loop, batches on worker threads.

One bounded queue per model; one worker thread per model instance. A worker
that finds requests queued takes them at once (up to max batch size images),
so a lone request never pays the delay window. It waits for company only while
other requests have reached the server and not yet a queue (`Arrivals`: they
are being parsed, routed or decoded): then it holds the batch open until it is
full, nothing more is on its way, or the oldest request has waited
max_batch_delay. Under load that turns many small forward passes into a few
large ones; at low load it costs nothing. With several instances, an idle one
holds its batch open the same way while another runs: it takes a full batch at
once, a partial one only after the delay. A helper instance (one where a lone CPU
instance leaves CPUs idle) takes only full batches, and only while the forward
passes have been busy most of the time (service.forward_load). What happens to a
batch once taken is service.batch_run's job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from service.arrivals import Arrival, Arrivals
from service.batch_run import (
    BatchObserver,
    BatchRun,
    BatchRunner,
    BatchSampler,
    Deliverer,
    NoObserver,
    Outcome,
    Settleable,
    WorkItem,
    split_input,
)
from service.engine import BatchInput
from service.errors import InferenceFailed, NotReady, Overloaded, RequestTimeout
from service.forward_load import BusyWindow
from service.results import ItemResult

log = logging.getLogger("service.batching")

Settle = tuple[Settleable, ItemResult | BaseException]

# A helper joins while the forward passes have been running at least this share of the time.
HELP_WHEN_BUSY = 0.7


def _settle_all(outcomes: list[Settle]) -> None:
    """Runs on the event loop: resolve futures nobody has given up on."""
    for future, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _deliver(outcomes: Sequence[Outcome]) -> None:
    """Hand each outcome to the event loop its request waits on."""
    by_loop: dict[Deliverer, list[Settle]] = {}
    for item, outcome in outcomes:
        by_loop.setdefault(item.loop, []).append((item.future, outcome))
    for loop, settles in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(_settle_all, settles)


class _Immediately:
    """Settles on the worker thread itself: for callers waiting on no event loop."""

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        callback(*args)


IMMEDIATELY = _Immediately()
OnDone = Callable[[ItemResult | BaseException], None]


class Batcher:
    def __init__(
        self,
        name: str,
        runners: Sequence[BatchRunner],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_images: int,
        observer: BatchObserver | None = None,
        arrivals: Arrivals | None = None,
        sampler: BatchSampler | None = None,
        helpers: Sequence[BatchRunner] = (),
        max_request_pass: int | None = None,
    ) -> None:
        """`helpers`: instances that run only while the others cannot keep up (see
        _next_helper_batch). `max_request_pass`: one request's images per forward pass, at
        most (service.cpus.default_request_pass); unset: `max_batch_size`. Requests are
        gathered into a batch up to `max_batch_size` images only."""
        if not runners:
            raise ValueError("a batcher needs at least one runner")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_request_pass = max_request_pass or max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_images = max_queue_images
        self._runners = list(runners)
        self._helpers = list(helpers)
        self._observer: BatchObserver = observer or NoObserver()
        self._sampler = sampler
        self._queue: deque[WorkItem] = deque()
        self._queued_images = 0
        self._busy_workers = 0
        self._accepting = True
        self._stopping = False
        lock = threading.RLock()  # what Condition() makes for itself
        self._cond = threading.Condition(lock)
        # Helpers sleep on a condition of their own (the same lock): an enqueue wakes the
        # instances, never a helper that would only look and sleep again.
        self._helper_cond = threading.Condition(lock)
        self._load = BusyWindow()
        self._threads: list[threading.Thread] = []
        self._arrivals = arrivals or Arrivals()
        self._arrivals.watch(self._cond)

    # ---- event-loop side -------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._queued_images

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and self._busy_workers == 0

    def incoming(self, arrival: Arrival | None = None) -> AbstractContextManager[Arrival]:
        return self._arrivals.incoming(arrival)

    async def submit(
        self,
        pixels: BatchInput,
        *,
        deadline: float,
        capture: frozenset[str] = frozenset(),
        arrival: Arrival | None = None,
    ) -> ItemResult:
        """Queue [N,C,H,W] pixels (or JPEGs); answer when their batch has run. Splits N > max request pass."""
        loop = asyncio.get_running_loop()
        chunks = split_input(pixels, self.max_request_pass)
        futures: list[asyncio.Future[ItemResult]] = [loop.create_future() for _ in chunks]
        items = [
            WorkItem(c, capture, deadline, f, loop) for c, f in zip(chunks, futures, strict=True)
        ]
        try:
            self._enqueue(items)
        finally:
            if arrival is not None:
                arrival.settle()  # after queueing: a worker may briefly wait for it, never miss it
        try:
            async with asyncio.timeout_at(loop.time() + max(0.0, deadline - time.monotonic())):
                if len(futures) == 1:  # most requests: no gathering future to build
                    return await futures[0]
                return ItemResult.concat(await asyncio.gather(*futures))
        except TimeoutError:
            waited = time.monotonic() - items[0].enqueued_at
            raise RequestTimeout(
                f"no answer within the request timeout (waited {waited:.3f} s)"
            ) from None
        finally:
            for future in futures:
                future.cancel()  # a no-op for the settled; drops the rest from their batch

    def enqueue(
        self,
        pixels: BatchInput,
        *,
        deadline: float,
        capture: frozenset[str] = frozenset(),
        on_done: OnDone,
    ) -> None:
        """Queue [N,C,H,W] pixels from any thread; `on_done` gets the result (or the error)
        on the worker thread. Refusals (queue full, shutting down) raise here, at once.

        For a caller with no event loop (the engine process answering HTTP workers): no
        hop through a loop on the way in or out. Past its deadline, a request is answered
        504 when its batch is taken, never computed.
        """
        chunks = split_input(pixels, self.max_request_pass)
        futures: list[concurrent.futures.Future[ItemResult]] = [
            concurrent.futures.Future() for _ in chunks
        ]
        left = [len(futures)]
        lock = threading.Lock()

        def settled(_: concurrent.futures.Future[ItemResult]) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            failed = next((f.exception() for f in futures if f.exception()), None)
            on_done(failed or ItemResult.concat([f.result() for f in futures]))

        for future in futures:
            future.add_done_callback(settled)
        self._enqueue(
            [
                WorkItem(c, capture, deadline, f, IMMEDIATELY)
                for c, f in zip(chunks, futures, strict=True)
            ]
        )

    def _enqueue(self, items: list[WorkItem]) -> None:
        count = sum(item.size for item in items)
        with self._cond:
            if not self._accepting:
                raise NotReady("the server is shutting down")
            if self._queued_images + count > self.max_queue_images:
                raise Overloaded(
                    f"queue for model {self.name!r} is full "
                    f"({self._queued_images} of {self.max_queue_images} images waiting)",
                    headers={"Retry-After": "1"},
                )
            self._queue.extend(items)
            self._queued_images += count
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or running (True), or `timeout` seconds pass (False).

        Lower-priority work on the same model (explanations) calls this before each
        forward pass, so that it runs only between classification batches.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and not self._busy_workers, timeout=max(0.0, timeout)
            )

    # ---- worker side -----------------------------------------------------

    def start(self) -> None:
        workers = [(runner, self._next_batch) for runner in self._runners]
        workers += [(runner, self._next_helper_batch) for runner in self._helpers]
        for index, (runner, next_batch) in enumerate(workers):
            thread = threading.Thread(
                target=self._work,
                args=(runner, next_batch),
                name=f"batcher-{self.name}-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> bool:
        """Finish what is queued, then end the workers; True when they ended in time."""
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
            self._helper_cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self, runner: BatchRunner, next_batch: Callable[[], list[WorkItem] | None]) -> None:
        while (items := next_batch()) is not None:
            try:
                self._run(runner, items)
            # BaseException on purpose: a SystemExit (or another non-Exception) raised by model
            # code would end this thread silently, and every later request would hang.
            except BaseException:
                log.exception("batch worker error", extra={"model": self.name})
                # Answer now rather than at the deadline; futures already settled are skipped.
                failed = InferenceFailed("the model failed on this input")
                _deliver([(item, failed) for item in items])
            finally:
                with self._cond:
                    self._load.ended(threading.get_ident(), time.monotonic())
                    self._busy_workers -= 1
                    if not self._busy_workers and not self._queue:
                        self._cond.notify_all()  # wakes work that yields to classification

    def _run(self, runner: BatchRunner, items: list[WorkItem]) -> None:
        sampled = self._sampler.layers_for_next_batch() if self._sampler else frozenset()
        run = BatchRun(runner, self._observer, self.name, sampled)
        _deliver(run.run(items))
        if self._sampler is not None:  # after the answers are on their way: nobody waits
            for features, probabilities in run.samples:
                self._sampler.observe(features, probabilities)

    def _next_batch(self) -> list[WorkItem] | None:
        with self._cond:
            while True:
                while not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                self._wait_for_company()
                if self._queue:  # another instance may have taken it all while this one waited
                    break
            items = self._take()
            if self._helpers and self._needs_help():
                self._helper_cond.notify()
            return items

    def _next_helper_batch(self) -> list[WorkItem] | None:
        """A helper's next batch: a full one, taken only while the forward passes are what
        holds the service back (lock held by the loop).

        A helper is a second forward pass beside the first on a machine with CPUs to
        spare for it. Where the HTTP side sets the pace (single digits at 64 concurrent
        clients on 2 cores), a second pass would only take the CPU the event loop needs
        (-18% req/s measured); where the forward pass does (64 digits per request), the
        first instance is busy nearly all the time and a full batch waits behind it.
        """
        with self._cond:
            while not self._stopping:
                if self._needs_help():
                    return self._take()
                self._helper_cond.wait()
            return None

    def _needs_help(self) -> bool:
        return (
            self._queued_images >= self.max_batch_size
            and self._load.fraction(time.monotonic()) >= HELP_WHEN_BUSY
        )

    def _take(self) -> list[WorkItem]:
        """The head of the queue (one request's pass may hold more), then more requests while
        the batch stays within max batch size (lock held, queue not empty)."""
        items = [self._queue.popleft()]
        total = items[0].size
        while self._queue and total + self._queue[0].size <= self.max_batch_size:
            items.append(self._queue.popleft())
            total += items[-1].size
        self._queued_images -= total
        self._busy_workers += 1
        self._load.started(threading.get_ident(), time.monotonic())
        return items

    def _wait_for_company(self) -> None:
        """Hold the batch open while requests are on their way, or while another instance
        is running, until it is full or its oldest request has waited the delay (lock held).

        A second instance adds throughput only where one is not enough: taking whatever is
        queued the moment it is idle, it would split the batches the first one would have
        run whole (W1 at 64 concurrent digits: mean batch 18 instead of 29).
        """
        while (
            self._queue
            and self._queued_images < self.max_batch_size
            and (self._arrivals.pending > 0 or self._busy_workers > 0)
            and not self._stopping
        ):
            remaining = self._queue[0].enqueued_at + self.max_delay_s - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)
