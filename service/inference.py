"""The use cases behind the endpoints: read images, prepare them, batch, answer."""

from __future__ import annotations

import time
from typing import Any

import torch
from starlette.requests import Request

from service.batching import Arrival, ItemResult
from service.errors import InvalidParameter
from service.inputs import read_images
from service.predictions import top_k as rank_top_k
from service.registry import ServedModel
from service.state import AppState

DEFAULT_TOP_K = 5  # or the class count, when a model has fewer classes


async def run_images(
    request: Request,
    state: AppState,
    served: ServedModel,
    *,
    deadline: float,
    capture: frozenset[str] = frozenset(),
    max_images: int | None = None,
) -> ItemResult:
    """Read, decode and preprocess the request's images, then run them through the batcher."""
    request.state.model = served.name
    limit = state.settings.max_images_per_request
    with served.batcher.incoming(getattr(request.state, "arrival", None)) as arrival:
        images = await read_images(request, max_images=min(limit, max_images or limit))
        started = time.perf_counter()
        prepared = await state.pipeline.prepare(served.loaded.preprocess, images)
        return await submit_pixels(
            request,
            served,
            prepared.pixels,
            deadline=deadline,
            capture=capture,
            arrival=arrival,
            preprocess_s=prepared.seconds,
            preprocess_wall_s=time.perf_counter() - started,
        )


async def submit_pixels(
    request: Request,
    served: ServedModel,
    pixels: torch.Tensor,
    *,
    deadline: float,
    capture: frozenset[str] = frozenset(),
    arrival: Arrival | None = None,
    preprocess_s: float = 0.0,
    preprocess_wall_s: float | None = None,
) -> ItemResult:
    """Run a prepared [N,C,H,W] batch (uint8 pixels or normalized float32) through the batcher.

    `preprocess_s` is the decode + preprocess work summed over the images (threads may
    overlap); `preprocess_wall_s` how long the request waited for it (default: the sum).
    What lands in request.state is read by service.observability for metrics and logs.
    """
    request.state.model = served.name
    request.state.images = int(pixels.shape[0])
    request.state.preprocess_images_s = preprocess_s
    request.state.preprocess_s = preprocess_s if preprocess_wall_s is None else preprocess_wall_s
    result = await served.batcher.submit(
        pixels, deadline=deadline, capture=capture, arrival=arrival
    )
    request.state.queue_wait_s = result.queue_wait_s
    request.state.inference_s = result.inference_s
    request.state.batch_size = result.batch_size
    return result


def resolve_top_k(requested: int | None, classes: int) -> int:
    if requested is None:
        return min(DEFAULT_TOP_K, classes)
    if requested > classes:
        raise InvalidParameter(f"top_k must be between 1 and {classes} (the class count)")
    return requested


async def classify_images(
    request: Request, state: AppState, served: ServedModel, *, top_k: int | None, deadline: float
) -> dict[str, Any]:
    request.state.model = served.name
    classes = served.loaded.card.num_classes
    top_k = resolve_top_k(top_k, classes)
    result = await run_images(request, state, served, deadline=deadline)
    return {
        "model": served.name,
        "predictions": rank_top_k(result.probabilities, served.loaded.card.labels, top_k),
    }
