"""A served model in this process: its batcher, explanation lane and monitor (torch side)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models import LoadedModel
from models.feature_layer import FeatureLayer, Kernels
from models.layers import conv_kernels
from service.arrivals import Arrival
from service.backend import ExplainOutcome
from service.batching import Batcher, OnDone
from service.engine import BatchInput
from service.explain_lane import ExplainLane, Yielding
from service.explain_terms import ExplainParams, Explanation, resolve_target
from service.explanations import ExplainRequest, explain
from service.jpeg import EncodedJpegs
from service.monitoring import ActivationMonitor
from service.results import ItemResult


class LocalBackend:
    def __init__(
        self,
        loaded: LoadedModel,
        layers: tuple[FeatureLayer, ...],
        batcher: Batcher,
        lane: ExplainLane,
        monitor: ActivationMonitor,
    ) -> None:
        self.loaded = loaded
        self.layers = layers
        self.batcher = batcher
        self.lane = lane
        self.monitor = monitor

    def incoming(self, arrival: Arrival | None = None) -> AbstractContextManager[Arrival]:
        return self.batcher.incoming(arrival)

    async def submit(
        self,
        pixels: NDArray[Any] | EncodedJpegs,
        *,
        deadline: float,
        capture: frozenset[str] = frozenset(),
        arrival: Arrival | None = None,
    ) -> ItemResult:
        return await self.batcher.submit(
            _batch_input(pixels), deadline=deadline, capture=capture, arrival=arrival
        )

    def enqueue(
        self,
        pixels: NDArray[Any] | EncodedJpegs,
        *,
        deadline: float,
        capture: frozenset[str],
        on_done: OnDone,
    ) -> None:
        """`submit` for a caller on no event loop: see Batcher.enqueue."""
        self.batcher.enqueue(
            _batch_input(pixels), deadline=deadline, capture=capture, on_done=on_done
        )

    async def explain(
        self, pixels: NDArray[np.uint8], params: ExplainParams, layer: str | None, deadline: float
    ) -> ExplainOutcome:
        queued = time.perf_counter()
        started: list[float] = []

        def job(module: Yielding) -> Explanation:
            started.append(time.perf_counter())
            return self._explain(module, torch.from_numpy(pixels), params, layer)

        explanation = await self.lane.run(job, deadline=deadline)
        done = time.perf_counter()
        return ExplainOutcome(explanation, started[0] - queued, done - started[0])

    def _explain(
        self, module: Yielding, pixels: torch.Tensor, params: ExplainParams, layer: str | None
    ) -> Explanation:
        """On the lane's thread: resolve the target (top1 needs a forward pass), then explain."""
        device = next(module.parameters()).device
        preprocess = self.loaded.preprocess
        x = preprocess.normalize(pixels).to(device)
        labels = self.loaded.card.labels
        scores: list[float] = []
        if params.target in (None, "", "top1"):
            with torch.no_grad():
                scores = module(x)[0].float().cpu().tolist()
        target = resolve_target(params.target, labels, scores)
        found = next((f for f in self.layers if f.name == layer), None)
        chosen = ExplainRequest(
            params.method, target,
            layer=module.module.get_submodule(found.module) if found else None,
            layer_call=found.call if found else 0,
            steps=params.steps, baseline=params.baseline, window=params.window,
            stride=params.stride,
        )  # fmt: skip
        return explain(module, x, chosen, preprocess=preprocess)

    async def kernels(self, layer: FeatureLayer) -> Kernels:
        return await asyncio.to_thread(conv_kernels, self.loaded.module, layer)

    async def activations(self) -> dict[str, Any]:
        return self.monitor.describe()

    def start(self) -> None:
        self.batcher.start()

    async def stop(self, grace_s: float) -> bool:
        """Finish what is queued (True when it did within the grace period)."""
        self.lane.stop()
        return await asyncio.to_thread(self.batcher.stop, grace_s)


def _batch_input(pixels: NDArray[Any] | EncodedJpegs) -> BatchInput:
    return pixels if isinstance(pixels, EncodedJpegs) else torch.from_numpy(pixels)
