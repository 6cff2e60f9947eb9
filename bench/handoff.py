"""The cost of handing one image from an HTTP worker to the engine process and back.

A real EngineServer (service.ipc.server) in a child process, whose model answers
at once with a probability vector of the card's class count, so the figure is
the hand-off alone: the worker's EngineLink copies pixels into its shared-memory
arena (or, when measuring `inline`, into the frame), the frame crosses the unix
socket, the engine reads the pixels in place, and the answer comes back. Printed
per image, for W1 (one 1x28x28 digit) and W2 (one 3x224x224 image), with one
request at a time and with 64 in flight. Run: python -m bench.handoff
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from models import default_model_path, load
from models.card import InputSpec, ModelCard
from service.arrivals import Arrivals
from service.ipc.client import EngineLink
from service.ipc.server import EngineServer, WorkerArrivals
from service.metrics import Metrics
from service.registry import BatchingInfo, ModelFacts, ModelRegistry
from service.results import ItemResult

SHAPES = {"W1": (1, 28, 28), "W2": (3, 224, 224)}
CLASSES = 1000


class AnswerAtOnce:
    """A model backend that computes nothing: what is left is the hand-off."""

    def __init__(self) -> None:
        self._probabilities = np.full((1, CLASSES), 1.0 / CLASSES, dtype=np.float32)
        self.pixel_sum = 0  # every pixel handed over is read, as a forward pass would

    def enqueue(
        self, pixels: NDArray[Any], *, on_done: Callable[[ItemResult], None], **_: Any
    ) -> None:
        self.pixel_sum = int(pixels.sum())
        probabilities = self._probabilities
        on_done(ItemResult(probabilities, probabilities, {}, 0.0, 0.0, 1, "cpu"))


def _card(shape: tuple[int, int, int]) -> ModelCard:
    """The shipped model's card with another input size and CLASSES labels."""
    channels, height, width = shape
    spec = InputSpec(
        channels=channels, height=height, width=width,
        mean=(0.5,) * channels, std=(0.25,) * channels,
    )  # fmt: skip
    card = load(default_model_path()).card
    return card.model_copy(update={"input": spec, "labels": tuple(str(i) for i in range(CLASSES))})


class _Model:
    def __init__(self, name: str, shape: tuple[int, int, int]) -> None:
        card = _card(shape)
        batching = BatchingInfo(32, 32, 0.005, 1024)
        self.facts = ModelFacts(name, "1", card, (), "cpu", "float32", 0, batching)
        self.backend = AnswerAtOnce()


class _Models:
    """What the engine server reads of service.loading.LocalModels."""

    repository = None

    def __init__(self) -> None:
        self.models = {key: _Model(key, shape) for key, shape in SHAPES.items()}
        self.on_change: Any = None

    def find(self, name: str, version: str | None) -> _Model | None:
        return self.models.get(name)

    def catalog(self) -> dict[str, Any]:
        return {"models": [m.facts.to_wire() for m in self.models.values()], "default": None}


def _engine(socket_path: str, ready: Any) -> None:
    async def main() -> None:
        server = EngineServer(
            _Models(),  # type: ignore[arg-type]
            WorkerArrivals(),
            CollectorRegistry(),
            asyncio.get_running_loop(),
        )
        server.start(Path(socket_path))
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def _measure(link: EngineLink, model: str, shape: tuple[int, ...], inflight: int) -> float:
    pixels = np.random.default_rng(0).integers(0, 255, (1, *shape), dtype=np.uint8)
    header = {"op": "infer", "model": model, "capture": []}
    deadline = time.monotonic() + 60.0
    count = 2000 if model == "W1" else 500

    async def one_lane(n: int) -> None:
        for _ in range(n):
            await link.call(dict(header), deadline, pixels)

    await one_lane(50)  # warm
    started = time.perf_counter()
    await asyncio.gather(*(one_lane(count // inflight) for _ in range(inflight)))
    return (time.perf_counter() - started) / (count // inflight * inflight)


async def _client(socket_path: Path, inline: bool) -> dict[str, float]:
    link = EngineLink(socket_path, Arrivals())
    if inline:
        link._arena = None
    await link.open(ModelRegistry(), Metrics(max_batch_size=32))
    figures = {}
    for model, shape in SHAPES.items():
        for inflight in (1, 64):
            figures[f"{model} {inflight} in flight"] = await _measure(link, model, shape, inflight)
    await link.close(0)
    return figures


def measure() -> dict[str, dict[str, float]]:
    """Microseconds per image: {"arena" | "inline": {"W1 1 in flight": us, ...}}."""
    with tempfile.TemporaryDirectory(prefix="handoff-") as folder:
        socket_path = Path(folder) / "engine.sock"
        ready = multiprocessing.get_context("spawn").Event()
        engine = multiprocessing.get_context("spawn").Process(
            target=_engine, args=(str(socket_path), ready), daemon=True
        )
        engine.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("the engine did not start")
            return {
                mode: {k: v * 1e6 for k, v in asyncio.run(_client(socket_path, inline)).items()}
                for mode, inline in (("arena", False), ("inline", True))
            }
        finally:
            engine.terminate()
            engine.join()


def summary() -> list[str]:
    return [
        f"hand-off worker -> engine -> worker ({mode}), {what}: {micros:.1f} us per image"
        for mode, figures in measure().items()
        for what, micros in figures.items()
    ]


def main() -> None:
    print("\n".join(summary()))


if __name__ == "__main__":
    main()
