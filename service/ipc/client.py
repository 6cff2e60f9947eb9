"""An HTTP worker's end of the engine socket: the served models as remote backends.

One connection per worker carries every request as a frame with an id; answers
come back in any order and settle the matching future. Pixels go through the
worker's shared-memory arena when it has room (else inline in the frame). When
the engine goes away, every request in flight fails at once with 503
engine_unavailable, the worker reports not ready, and it reconnects as soon as
the supervisor has a new engine listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.feature_layer import FeatureLayer, Kernels
from service.arrivals import Arrival, Arrivals
from service.backend import ExplainOutcome
from service.errors import EngineUnavailable, RequestTimeout, error_named
from service.explain_terms import ExplainParams, Explanation
from service.ipc.arena import Arena
from service.ipc.wire import CATALOG_ID, arrays_of, frame, read_frame
from service.jpeg import EncodedJpegs
from service.metrics import Metrics
from service.model_repository import RepositoryControl
from service.registry import ModelFacts, ModelRegistry, ServedModel
from service.results import ItemResult

log = logging.getLogger("service.ipc")

# Per worker: 100 ResNet-sized (3x224x224) images in flight; a request that finds no room
# travels inline in its frame instead.
ARENA_BYTES = 16 * 1024 * 1024
RECONNECT_S = 0.1
CONNECT_POLL_S = 0.02
# Past its deadline the engine answers 504 itself; this only ends a wait on an engine that hung.
DEADLINE_SLACK_S = 2.0
LOAD_TIMEOUT_S = 600.0

Answer = tuple[dict[str, Any], dict[str, NDArray[Any]]]


class EngineLink:
    """The model source of an HTTP worker: the engine process, over its socket."""

    def __init__(self, socket_path: Path, arrivals: Arrivals) -> None:
        self._path = socket_path
        self.arrivals = arrivals
        # Named by pid: the supervisor removes the arena of a worker that was killed.
        self._arena = _arena(socket_path.parent / f"arena-{os.getpid()}")
        if self._arena is not None:
            # The engine's batcher reads this worker's requests on their way from the arena.
            arrivals.publish = self._arena.publish_pending
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._registry: ModelRegistry | None = None
        self._metrics: Metrics | None = None
        self._repository: RemoteRepository | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closing = False

    # ---- ModelSource -----------------------------------------------------

    async def open(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self._registry, self._metrics = registry, metrics
        hello = await self._connect(wait=True)
        self._repository = RemoteRepository(self) if hello["repository"] else None
        metrics.remote_live = self.live_metrics

    def repository_control(self) -> RepositoryControl | None:
        return self._repository

    def _apply_catalog(self, catalog: dict[str, Any]) -> None:
        """Make the registry hold what the engine serves: a new version in, a gone one out."""
        registry, metrics = self._registry, self._metrics
        assert registry is not None and metrics is not None
        facts = [ModelFacts.from_wire(data) for data in catalog["models"]]
        present = {(f.name, f.version) for f in facts}
        for served in registry.served():
            if (served.name, served.version) not in present:
                registry.remove(served.name, served.version)
        for fact in facts:
            if fact.version not in registry.versions.get(fact.name, {}):
                served = ServedModel(fact, RemoteBackend(self, fact.name, fact.version))
                metrics.model_loaded(served)
                registry.add(served)
        if catalog["default"]:
            registry.default_name = catalog["default"]

    async def live_metrics(self) -> bytes:
        """The engine's live gauges (queue depth, activations, GPU) as exposition text."""
        _, arrays = await self.call({"op": "metrics"}, time.monotonic() + 10.0)
        return arrays["text"].tobytes()

    async def close(self, grace_s: float) -> None:
        self._closing = True
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
        self._fail_all()
        if self._arena is not None:
            self._arena.close()

    # ---- the connection --------------------------------------------------

    async def _connect(self, *, wait: bool = False) -> dict[str, Any]:
        """Connect and say hello; with `wait`, until an engine listens (it starts beside us)."""
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self._path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not wait:
                    raise
                await asyncio.sleep(CONNECT_POLL_S)
        arena = None if self._arena is None else str(self._arena.path)
        writer.writelines(frame({"id": -1, "op": "hello", "arena": arena}))
        hello, _ = await read_frame(reader)
        self._apply_catalog(hello)
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read(reader))
        return hello

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, payload = await read_frame(reader)
                if header["id"] == CATALOG_ID:
                    self._apply_catalog(header)
                    continue
                future = self._waiting.pop(header["id"], None)
                if future is not None and not future.done():
                    future.set_result((header, arrays_of(header, payload)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        if not self._closing:
            log.error("the engine went away; reconnecting")
            self._writer = None
            self._fail_all()
            self._reconnect_task = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        if self._registry is not None:
            self._registry.ready = False  # /readyz 503 until an engine is warm again
        while not self._closing:
            await asyncio.sleep(RECONNECT_S)
            with contextlib.suppress(OSError):
                await self._connect()
                if self._registry is not None:
                    self._registry.ready = True
                log.info("engine connected again")
                return

    def _fail_all(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(EngineUnavailable("the engine process ended; retry shortly"))

    async def call(
        self,
        header: dict[str, Any],
        deadline: float,
        pixels: NDArray[Any] | EncodedJpegs | None = None,
        arrival: Arrival | None = None,
    ) -> Answer:
        """Send one request, wait for its answer; raise the engine's error as its own."""
        writer = self._writer
        if writer is None:
            if arrival is not None:
                arrival.settle()
            raise EngineUnavailable("the engine process is restarting; retry shortly")
        if isinstance(pixels, EncodedJpegs):  # the files back to back, as one uint8 array
            joined, header["jpeg_lengths"] = pixels.joined()
            pixels = np.frombuffer(joined, dtype=np.uint8)
        request_id = next(self._ids)
        block = self._place(header, pixels)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        arrays = {"pixels": pixels} if pixels is not None and block is None else None
        if arrival is not None:
            # Before sending: the engine cannot be told when a count in another process
            # drops, so it must never see this request both on its way and in its queue
            # (it would hold a batch open for it until the delay ran out).
            arrival.settle()
        writer.writelines(frame({**header, "id": request_id, "deadline": deadline}, arrays))
        try:
            timeout = max(0.0, deadline - time.monotonic()) + DEADLINE_SLACK_S
            reply, answer_arrays = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise RequestTimeout("the engine did not answer within the deadline") from None
        finally:
            if block is not None and self._arena is not None:
                arena = self._arena
                if future.done():
                    arena.release(block)
                else:  # the engine may still read it: free the block when it answers
                    future.add_done_callback(lambda _: arena.release(block))
        error = reply.get("error")
        if error is not None:
            raise error_named(error["type"])(error["detail"], headers=error["headers"] or None)
        return reply, answer_arrays

    def _place(self, header: dict[str, Any], pixels: NDArray[Any] | None) -> int | None:
        """Copy the pixels into the arena, noting where in the header; None: no room."""
        if pixels is None or self._arena is None:
            return None
        block = self._arena.allocate(pixels.nbytes)
        if block is not None:
            self._arena.write(block, pixels)
            header.update(block=block, shape=list(pixels.shape), dtype=pixels.dtype.str)
        return block


def _arena(path: Path) -> Arena | None:
    try:
        return Arena(path, ARENA_BYTES)
    except OSError as exc:  # e.g. a small /dev/shm: every request then travels in its frame
        log.warning("no shared-memory arena; pixels travel over the socket", extra={
            "path": str(path), "error": str(exc)})  # fmt: skip
        return None


class RemoteRepository:
    """The engine's model repository (service.model_repository.RepositoryControl)."""

    def __init__(self, link: EngineLink) -> None:
        self._link = link

    async def index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        header = {"op": "repository_index", "ready_only": ready_only}
        reply, _ = await self._link.call(header, time.monotonic() + 30.0)
        index: list[dict[str, str]] = reply["index"]
        return index

    async def load(self, name: str) -> None:
        await self._link.call({"op": "repository_load", "name": name}, _load_deadline())

    async def unload(self, name: str) -> None:
        await self._link.call({"op": "repository_unload", "name": name}, _load_deadline())


def _load_deadline() -> float:
    # Loading warms the model at every batch size: a large one on a CPU takes minutes.
    return time.monotonic() + LOAD_TIMEOUT_S


class RemoteBackend:
    """One model version in the engine process (service.backend.ModelBackend)."""

    def __init__(self, link: EngineLink, name: str, version: str) -> None:
        self._link = link
        self._model = {"model": name, "version": version}

    def incoming(self, arrival: Arrival | None = None) -> AbstractContextManager[Arrival]:
        return self._link.arrivals.incoming(arrival)

    async def submit(
        self,
        pixels: NDArray[Any] | EncodedJpegs,
        *,
        deadline: float,
        capture: frozenset[str] = frozenset(),
        arrival: Arrival | None = None,
    ) -> ItemResult:
        header = {"op": "infer", **self._model, "capture": sorted(capture)}
        reply, arrays = await self._link.call(header, deadline, pixels, arrival)
        return ItemResult(
            probabilities=arrays["probabilities"],
            logits=arrays["logits"],
            features={name: arrays[f"feature:{name}"] for name in capture},
            queue_wait_s=reply["queue_wait_s"],
            inference_s=reply["inference_s"],
            batch_size=reply["batch_size"],
            device=reply["device"],
        )

    async def explain(
        self, pixels: NDArray[np.uint8], params: ExplainParams, layer: str | None, deadline: float
    ) -> ExplainOutcome:
        header = {"op": "explain", **self._model, "params": asdict(params), "layer": layer}
        reply, arrays = await self._link.call(header, deadline, pixels)
        explanation = Explanation(
            reply["method"], reply["target"], arrays["attribution"], arrays["probabilities"]
        )
        return ExplainOutcome(explanation, reply["queue_wait_s"], reply["inference_s"])

    async def kernels(self, layer: FeatureLayer) -> Kernels:
        header = {"op": "kernels", **self._model, "layer": layer.name}
        reply, arrays = await self._link.call(header, time.monotonic() + 30.0)
        return Kernels(arrays["weights"], arrays.get("bias"), reply["groups"])

    async def activations(self) -> dict[str, Any]:
        header = {"op": "activations", **self._model}
        reply, _ = await self._link.call(header, time.monotonic() + 30.0)
        body: dict[str, Any] = reply["body"]
        return body
