"""The engine's end of the socket: HTTP workers' requests into this process's models.

Each worker holds one connection. Its `hello` names its arena (attached here)
and gets back what every served model is (service.registry.ModelFacts). Each
later frame is one request, run as its own task: pixels are read in place from
the worker's arena (or the frame, when the arena was full) and submitted to the
model's batcher with the worker's deadline, so one queue and one batch take
requests from all workers. Errors go back as their class name and detail; the
worker raises the same ServiceError, so a client sees the same problem in both
process models.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, generate_latest

from service.arrivals import Arrivals
from service.errors import InferenceFailed, ServiceError, UnknownLayer, UnknownModel
from service.explain_terms import ExplainParams
from service.ipc.arena import ArenaReader
from service.ipc.wire import arrays_of, frame, read_frame
from service.loading import LocalModel

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


class EngineServer:
    def __init__(
        self,
        models: list[LocalModel],
        default_name: str | None,
        arrivals: WorkerArrivals,
        live: CollectorRegistry,
    ) -> None:
        self._live = live
        self._models = {model.facts.name: model for model in models}
        self._default_name = default_name
        self._arrivals = arrivals
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, path: Path) -> None:
        self._server = await asyncio.start_unix_server(self._connection, path=str(path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arena: ArenaReader | None = None
        try:
            while True:
                try:
                    header, payload = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if header["op"] == "hello":
                    if header["arena"] is not None:
                        arena = ArenaReader(Path(header["arena"]))
                        self._arrivals.arenas.add(arena)
                    writer.writelines(frame({"id": header["id"], **self._hello()}))
                    continue
                task = asyncio.create_task(self._answer(header, payload, arena, writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            if arena is not None:
                self._arrivals.arenas.discard(arena)
            writer.close()

    def _hello(self) -> dict[str, Any]:
        return {
            "models": [model.facts.to_wire() for model in self._models.values()],
            "default": self._default_name,
        }

    async def _answer(
        self,
        header: dict[str, Any],
        payload: bytearray,
        arena: ArenaReader | None,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            reply, arrays = await self._run(header, payload, arena)
        except ServiceError as exc:
            reply, arrays = _error(exc), {}
        except Exception:
            log.exception("engine request failed", extra={"op": header.get("op")})
            reply, arrays = _error(InferenceFailed("the model failed on this input")), {}
        if not writer.is_closing():
            writer.writelines(frame({"id": header["id"], **reply}, arrays))

    async def _run(
        self, header: dict[str, Any], payload: bytearray, arena: ArenaReader | None
    ) -> Reply:
        if header["op"] == "metrics":
            text = generate_latest(self._live)
            return {}, {"text": np.frombuffer(text, dtype=np.uint8)}
        model = self._models.get(header.get("model", ""))
        if model is None:
            raise UnknownModel(f"no model named {header.get('model')!r} is served")
        op = header["op"]
        if op == "infer":
            return await self._infer(model, header, _input(header, payload, arena))
        if op == "explain":
            return await self._explain(model, header, _input(header, payload, arena))
        if op == "kernels":
            return await self._kernels(model, header["layer"])
        if op == "activations":
            return {"body": await model.backend.activations()}, {}
        raise ValueError(f"unknown op {op!r}")

    async def _infer(
        self, model: LocalModel, header: dict[str, Any], pixels: NDArray[Any]
    ) -> Reply:
        result = await model.backend.submit(
            pixels, deadline=header["deadline"], capture=frozenset(header.get("capture", ()))
        )
        reply = {
            "queue_wait_s": result.queue_wait_s,
            "inference_s": result.inference_s,
            "batch_size": result.batch_size,
            "device": result.device,
        }
        arrays = {"probabilities": result.probabilities, "logits": result.logits}
        arrays.update({f"feature:{name}": value for name, value in result.features.items()})
        return reply, arrays

    async def _explain(
        self, model: LocalModel, header: dict[str, Any], pixels: NDArray[Any]
    ) -> Reply:
        params = ExplainParams(**header["params"])
        outcome = await model.backend.explain(pixels, params, header["layer"], header["deadline"])
        explanation = outcome.explanation
        reply = {
            "method": explanation.method,
            "target": explanation.target,
            "queue_wait_s": outcome.queue_wait_s,
            "inference_s": outcome.inference_s,
        }
        arrays = {
            "attribution": explanation.attribution,
            "probabilities": explanation.probabilities,
        }
        return reply, arrays

    async def _kernels(self, model: LocalModel, name: str) -> Reply:
        layer = next((entry for entry in model.facts.layers if entry.name == name), None)
        if layer is None:
            raise UnknownLayer(f"model {model.facts.name!r} has no layer {name!r}")
        kernels = await model.backend.kernels(layer)
        arrays = {"weights": kernels.weights}
        if kernels.bias is not None:
            arrays["bias"] = kernels.bias
        return {"groups": kernels.groups}, arrays


def _input(header: dict[str, Any], payload: bytearray, arena: ArenaReader | None) -> NDArray[Any]:
    """The request's pixels: in the worker's arena, or in the frame when it had no room."""
    block = header.get("block")
    if block is not None and arena is not None:
        return arena.array(block, header["shape"], header["dtype"])
    return arrays_of(header, payload)["pixels"]


def _error(exc: ServiceError) -> dict[str, Any]:
    return {"error": {"type": type(exc).__name__, "detail": exc.detail, "headers": exc.headers}}
