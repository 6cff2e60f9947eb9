"""Running one batch on a worker thread: drop the abandoned, bisect failures, split results.

A batch's requests whose caller went away are skipped and those past their
deadline answered 504, never computed. A batch that raises is split in halves
until only the requests that cause the error fail (on CUDA, an out-of-memory
batch is retried in halves the same way).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from models.activation_stats import SUMMARY_IMAGES, MapSummary
from service.engine import BatchInput, EngineOutput
from service.errors import InferenceFailed, RequestTimeout, ServiceError
from service.jpeg import EncodedJpegs
from service.results import ItemResult

log = logging.getLogger("service.batching")


class BatchRunner(Protocol):
    """What a worker runs a batch on: service.engine.Engine, or a test's small fake."""

    @property
    def device_name(self) -> str: ...

    def run(
        self,
        inputs: Sequence[BatchInput],
        capture: frozenset[str] = ...,
        summarize: frozenset[str] = ...,
    ) -> EngineOutput: ...


class BatchObserver(Protocol):
    """Told about every batch; the metrics module implements it."""

    def batch_done(
        self, *, size: int, seconds: float, device: str, queue_waits: Sequence[float]
    ) -> None: ...

    def batch_failed(self, *, kind: str) -> None: ...


class BatchSampler(Protocol):
    """Takes a look at some batches' maps (service.monitoring.ActivationMonitor)."""

    def layers_for_next_batch(self) -> frozenset[str]: ...

    def observe(
        self, summaries: Mapping[str, MapSummary], probabilities: NDArray[np.float32]
    ) -> None: ...


class NoObserver:
    def batch_done(
        self, *, size: int, seconds: float, device: str, queue_waits: Sequence[float]
    ) -> None:
        pass

    def batch_failed(self, *, kind: str) -> None:
        pass


class Settleable(Protocol):
    """Where a request's answer goes: an asyncio.Future, or a concurrent.futures.Future."""

    def done(self) -> bool: ...

    def set_result(self, result: ItemResult, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Deliverer(Protocol):
    """What runs the settling: the request's event loop, or the worker thread itself."""

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any: ...


def split_input(pixels: BatchInput, size: int) -> Sequence[BatchInput]:
    """Slices of at most `size` images, in order."""
    if len(pixels) <= size:
        return [pixels]  # most requests: no slicing to pay for
    if isinstance(pixels, EncodedJpegs):
        return pixels.split(size)
    return torch.split(pixels, size)


@dataclass(eq=False)
class WorkItem:
    """One request's images (or a max-batch-size slice of them) waiting for a batch."""

    pixels: BatchInput
    capture: frozenset[str]
    deadline: float
    future: Settleable
    loop: Deliverer
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return len(self.pixels)


Outcome = tuple[WorkItem, ItemResult | ServiceError]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


class BatchRun:
    """One batch taken off the queue, run on one runner."""

    def __init__(
        self,
        runner: BatchRunner,
        observer: BatchObserver,
        model: str,
        sampled: frozenset[str] = frozenset(),
    ) -> None:
        """`sampled`: layers to summarize for a BatchSampler, whatever the requests asked for."""
        self._runner = runner
        self._observer = observer
        self._model = model
        self._sampled = sampled
        self._started = time.monotonic()
        self.outcomes: list[Outcome] = []
        self.samples: list[tuple[dict[str, MapSummary], NDArray[np.float32]]] = []

    def run(self, items: Sequence[WorkItem]) -> list[Outcome]:
        live: list[WorkItem] = []
        for item in items:
            if item.future.done():  # the caller gave up (timeout or disconnect)
                continue
            if item.deadline <= self._started:
                self.outcomes.append((item, RequestTimeout("the request waited past its deadline")))
                self._observer.batch_failed(kind="timeout")
            else:
                live.append(item)
        if live:
            self._run_or_split(live)
        return self.outcomes

    def _run_or_split(self, items: Sequence[WorkItem]) -> None:
        capture = frozenset().union(*(item.capture for item in items))
        pixels = [item.pixels for item in items]
        try:
            if self._sampled:
                output = self._runner.run(pixels, capture, summarize=self._sampled)
            else:
                output = self._runner.run(pixels, capture)
        except Exception as exc:
            self._observer.batch_failed(kind="oom" if _is_oom(exc) else "error")
            if len(items) > 1:
                middle = len(items) // 2
                self._run_or_split(items[:middle])
                self._run_or_split(items[middle:])
            else:
                self.outcomes.append((items[0], self._failure(exc, items[0])))
            return
        self.outcomes.extend(self._results(items, output))
        if self._sampled:
            # The summaries cover the batch's first images only: so do the predictions.
            self.samples.append((output.summaries, output.probabilities[:SUMMARY_IMAGES]))

    def _results(self, items: Sequence[WorkItem], output: EngineOutput) -> list[Outcome]:
        size = sum(item.size for item in items)
        waits = [self._started - item.enqueued_at for item in items]
        device = self._runner.device_name
        self._observer.batch_done(
            size=size, seconds=output.seconds, device=device, queue_waits=waits
        )
        results: list[Outcome] = []
        offset = 0
        for item, wait in zip(items, waits, strict=True):
            rows = slice(offset, offset + item.size)
            offset += item.size
            result = ItemResult(
                probabilities=output.probabilities[rows],
                logits=output.logits[rows],
                features={name: output.features[name][rows] for name in item.capture},
                queue_wait_s=wait,
                inference_s=output.seconds,
                batch_size=size,
                device=device,
            )
            results.append((item, result))
        return results

    def _failure(self, exc: Exception, item: WorkItem) -> ServiceError:
        extra = {"model": self._model, "images": item.size}
        log.error("inference failed: %s: %s", type(exc).__name__, exc, extra=extra)
        if isinstance(exc, ServiceError):
            return exc
        if _is_oom(exc):
            return InferenceFailed("the image does not fit in device memory, even alone")
        return InferenceFailed("the model failed on this input")
