"""What the HTTP side asks of a served model, wherever the model runs.

In one process the model, its batcher and its explanation lane sit beside the
routes (service.local_backend); with several HTTP workers they sit in the engine
process and each worker reaches them over a socket and shared memory
(service.ipc.client). The routes see only this protocol: NumPy in, NumPy out.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from models.feature_layer import FeatureLayer, Kernels
from service.arrivals import Arrival
from service.explain_terms import ExplainParams, Explanation
from service.jpeg import EncodedJpegs
from service.results import ItemResult


@dataclass(frozen=True)
class ExplainOutcome:
    """An explanation with what it cost: the lane's wait and its run."""

    explanation: Explanation
    queue_wait_s: float
    inference_s: float


class ModelBackend(Protocol):
    def incoming(self, arrival: Arrival | None = None) -> AbstractContextManager[Arrival]:
        """The request's arrival ticket; see service.batching.Batcher.incoming."""
        ...

    async def submit(
        self,
        pixels: NDArray[Any] | EncodedJpegs,
        *,
        deadline: float,
        capture: frozenset[str] = frozenset(),
        arrival: Arrival | None = None,
    ) -> ItemResult:
        """Run [N,C,H,W] pixels (uint8, or float32 already normalized), or JPEGs the
        engine decodes on its device, in the model's batches."""
        ...

    async def explain(
        self, pixels: NDArray[np.uint8], params: ExplainParams, layer: str | None, deadline: float
    ) -> ExplainOutcome:
        """Explain one uint8 [1,C,H,W] image on the model's lane, never inside a batch."""
        ...

    async def kernels(self, layer: FeatureLayer) -> Kernels:
        """A convolution layer's learned filters [out, in, kh, kw]."""
        ...

    async def activations(self) -> dict[str, Any]:
        """The activation monitor's windows and reference (GET /activations)."""
        ...
