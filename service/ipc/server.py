"""The engine's end of the socket: HTTP workers' requests into this process's models.

Each worker holds one connection, read by its own thread here. Its `hello`
names its arena (attached here) and gets back what every served model is
(service.registry.ModelFacts). Each later frame is one request. Inference goes
straight from that thread into the model's batcher (Batcher.enqueue) with the
worker's deadline, and its answer is written back by the batcher's thread when
the batch has run: one queue and one batch take requests from all workers, with
no event loop to hop through on the way in or out. The rarer operations
(explanations, kernels, monitoring, live metrics) run on the engine's event loop
as they do in one process. Errors go back as their class name and detail; the
worker raises the same ServiceError, so a client sees the same problem in both
process models.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, generate_latest

from service.arrivals import Arrivals
from service.errors import (
    InferenceFailed,
    ModelControlUnavailable,
    ServiceError,
    UnknownLayer,
    UnknownModel,
)
from service.explain_terms import ExplainParams
from service.ipc.arena import ArenaReader
from service.ipc.wire import CATALOG_ID, arrays_of, frame, read_frame_from
from service.jpeg import EncodedJpegs
from service.loading import LocalModel, LocalModels
from service.results import ItemResult

log = logging.getLogger("service.ipc")

Reply = tuple[dict[str, Any], Mapping[str, NDArray[Any]]]


class WorkerArrivals(Arrivals):
    """This process's arrivals plus every connected worker's, read from their arenas."""

    def __init__(self) -> None:
        super().__init__()
        self.arenas: set[ArenaReader] = set()

    @property
    def pending(self) -> int:
        return self._pending + sum(arena.pending for arena in self.arenas)


class _Connection:
    """One worker's socket: frames written whole, from whichever thread answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, request_id: int, reply: dict[str, Any], arrays: Mapping[str, Any]) -> None:
        data = b"".join(frame({"id": request_id, **reply}, arrays))
        with self._lock, contextlib.suppress(OSError):  # the worker is gone: nobody reads it
            self.sock.sendall(data)

    def fail(self, request_id: int, exc: BaseException) -> None:
        if not isinstance(exc, ServiceError):
            log.error("engine request failed", exc_info=exc)
            exc = InferenceFailed("the model failed on this input")
        self.send(request_id, _error(exc), {})


class EngineServer:
    def __init__(
        self,
        models: LocalModels,
        arrivals: WorkerArrivals,
        live: CollectorRegistry,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._models = models
        self._arrivals = arrivals
        self._live = live
        self._loop = loop
        self._listener: socket.socket | None = None
        self._connections: set[_Connection] = set()
        # Every change of the served versions reaches every worker, before any answer
        # that follows it on the same connection.
        models.on_change = self.broadcast_catalog

    def broadcast_catalog(self) -> None:
        catalog = {"op": "catalog", **self._models.catalog()}
        for connection in list(self._connections):
            connection.send(CATALOG_ID, catalog, {})

    def start(self, path: Path) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, name="engine-accept", daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._serve, args=(sock,), name="engine-worker-link", daemon=True
            ).start()

    def _serve(self, sock: socket.socket) -> None:
        connection = _Connection(sock)
        arena: ArenaReader | None = None
        stream = sock.makefile("rb")
        try:
            while (received := read_frame_from(stream)) is not None:
                header, payload = received
                if header["op"] == "hello":
                    if header["arena"] is not None:
                        arena = ArenaReader(Path(header["arena"]))
                        self._arrivals.arenas.add(arena)
                    self._hello(connection, header["id"])
                elif header["op"] == "infer":
                    self._infer(connection, header, payload, arena)
                else:
                    self._on_loop(connection, header, payload, arena)
        except (OSError, ValueError):
            pass  # the worker went away mid-frame
        finally:
            self._connections.discard(connection)
            if arena is not None:
                self._arrivals.arenas.discard(arena)
            stream.close()
            sock.close()

    def _hello(self, connection: _Connection, request_id: int) -> None:
        # On the event loop, as every change of the catalog: none is missed or sent twice.
        def welcome() -> None:
            hello = {**self._models.catalog(), "repository": self._models.repository is not None}
            connection.send(request_id, hello, {})
            self._connections.add(connection)

        self._loop.call_soon_threadsafe(welcome)

    def _model(self, header: dict[str, Any]) -> LocalModel:
        name, version = header.get("model", ""), header.get("version")
        model = self._models.find(name, version)
        if model is None:
            shown = name if version is None else f"{name} version {version}"
            raise UnknownModel(f"no model {shown!r} is served")
        return model

    def _infer(
        self,
        connection: _Connection,
        header: dict[str, Any],
        payload: bytearray,
        arena: ArenaReader | None,
    ) -> None:
        request_id = header["id"]

        def answer(outcome: ItemResult | BaseException) -> None:  # on the batcher's thread
            if isinstance(outcome, BaseException):
                connection.fail(request_id, outcome)
            else:
                connection.send(request_id, *_result(outcome))

        try:
            self._model(header).backend.enqueue(
                _input(header, payload, arena),
                deadline=header["deadline"],
                capture=frozenset(header.get("capture", ())),
                on_done=answer,
            )
        except Exception as exc:  # refused at once: queue full, shutting down, bad model
            connection.fail(request_id, exc)

    def _on_loop(
        self,
        connection: _Connection,
        header: dict[str, Any],
        payload: bytearray,
        arena: ArenaReader | None,
    ) -> None:
        request_id = header["id"]

        def answer(done: concurrent.futures.Future[Reply]) -> None:
            failed = done.exception()
            if failed is not None:
                connection.fail(request_id, failed)
            else:
                connection.send(request_id, *done.result())

        running = asyncio.run_coroutine_threadsafe(self._run(header, payload, arena), self._loop)
        running.add_done_callback(answer)

    async def _run(
        self, header: dict[str, Any], payload: bytearray, arena: ArenaReader | None
    ) -> Reply:
        op = header["op"]
        if op == "metrics":
            text = generate_latest(self._live)
            return {}, {"text": np.frombuffer(text, dtype=np.uint8)}
        if op.startswith("repository_"):
            return await self._repository(op, header), {}
        model = self._model(header)
        if op == "explain":
            return await _explain(model, header, _pixels(header, payload, arena))
        if op == "kernels":
            return await _kernels(model, header["layer"])
        if op == "activations":
            return {"body": await model.backend.activations()}, {}
        raise ValueError(f"unknown op {op!r}")

    async def _repository(self, op: str, header: dict[str, Any]) -> dict[str, Any]:
        control = self._models.repository
        if control is None:
            raise ModelControlUnavailable("no model repository is served")
        if op == "repository_index":
            return {"index": await control.index(ready_only=header["ready_only"])}
        if op == "repository_load":
            await control.load(header["name"])
        elif op == "repository_unload":
            await control.unload(header["name"])
        else:
            raise ValueError(f"unknown op {op!r}")
        return {}


def _result(result: ItemResult) -> Reply:
    reply = {
        "queue_wait_s": result.queue_wait_s,
        "inference_s": result.inference_s,
        "batch_size": result.batch_size,
        "device": result.device,
    }
    arrays = {"probabilities": result.probabilities, "logits": result.logits}
    arrays.update({f"feature:{name}": value for name, value in result.features.items()})
    return reply, arrays


async def _explain(model: LocalModel, header: dict[str, Any], pixels: NDArray[Any]) -> Reply:
    params = ExplainParams(**header["params"])
    outcome = await model.backend.explain(pixels, params, header["layer"], header["deadline"])
    explanation = outcome.explanation
    reply = {
        "method": explanation.method,
        "target": explanation.target,
        "queue_wait_s": outcome.queue_wait_s,
        "inference_s": outcome.inference_s,
    }
    return reply, {
        "attribution": explanation.attribution,
        "probabilities": explanation.probabilities,
    }


async def _kernels(model: LocalModel, name: str) -> Reply:
    layer = next((entry for entry in model.facts.layers if entry.name == name), None)
    if layer is None:
        raise UnknownLayer(f"model {model.facts.name!r} has no layer {name!r}")
    kernels = await model.backend.kernels(layer)
    arrays = {"weights": kernels.weights}
    if kernels.bias is not None:
        arrays["bias"] = kernels.bias
    return {"groups": kernels.groups}, arrays


def _pixels(header: dict[str, Any], payload: bytearray, arena: ArenaReader | None) -> NDArray[Any]:
    """The request's array: in the worker's arena, or in the frame when it had no room."""
    block = header.get("block")
    if block is not None and arena is not None:
        return arena.array(block, header["shape"], header["dtype"])
    return arrays_of(header, payload)["pixels"]


def _input(
    header: dict[str, Any], payload: bytearray, arena: ArenaReader | None
) -> NDArray[Any] | EncodedJpegs:
    """The request's pixels, or its JPEG files (sent back to back, with their lengths)."""
    array = _pixels(header, payload, arena)
    lengths = header.get("jpeg_lengths")
    return array if lengths is None else EncodedJpegs.from_joined(array.data, lengths)


def _error(exc: ServiceError) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "detail": exc.detail, "headers": exc.headers}}
