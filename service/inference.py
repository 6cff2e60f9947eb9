"""The use cases behind the endpoints: read images, prepare them, batch, answer.

Each takes the request (for its body) and the route's `ModelCall`; what it
learns (images, preprocessing, queue and inference times) goes to the call's trace.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from starlette.requests import Request

from service.arrivals import Arrival
from service.errors import InvalidParameter
from service.inputs import read_images
from service.jpeg import EncodedJpegs
from service.predictions import top_k as rank_top_k
from service.results import ItemResult
from service.state import ModelCall

DEFAULT_TOP_K = 5  # or the class count, when a model has fewer classes


async def run_images(
    request: Request,
    call: ModelCall,
    *,
    capture: frozenset[str] = frozenset(),
    max_images: int | None = None,
) -> ItemResult:
    """Read, decode and preprocess the request's images, then run them through the batcher."""
    with call.served.backend.incoming(getattr(request.state, "arrival", None)) as arrival:
        pixels = await prepare_input(
            request, call, max_images=max_images, keep_jpegs=call.served.facts.decodes_jpeg
        )
        return await submit_pixels(call, pixels, capture=capture, arrival=arrival)


async def prepare_input(
    request: Request, call: ModelCall, *, max_images: int | None = None, keep_jpegs: bool
) -> NDArray[np.uint8] | EncodedJpegs:
    """The request's images as the model's uint8 [N,C,H,W] pixels (decoded, resized), or,
    with `keep_jpegs`, as JPEGs for the engine to decode (see ImagePipeline.prepare)."""
    limit = call.settings.max_images_per_request
    images = await read_images(
        request, max_images=min(limit, max_images or limit), spool=call.state.spool
    )
    started = time.perf_counter()
    prepared = await call.state.pipeline.prepare(
        call.served.pixels, images, call.deadline, keep_jpegs=keep_jpegs
    )
    call.trace.prepared(len(images), prepared.seconds, time.perf_counter() - started)
    return prepared.pixels


async def prepare_images(
    request: Request, call: ModelCall, *, max_images: int | None = None
) -> NDArray[np.uint8]:
    """The request's images as the model's uint8 [N,C,H,W] pixels, decoded here."""
    pixels = await prepare_input(request, call, max_images=max_images, keep_jpegs=False)
    assert not isinstance(pixels, EncodedJpegs)
    return pixels


async def submit_pixels(
    call: ModelCall,
    pixels: NDArray[Any] | EncodedJpegs,
    *,
    capture: frozenset[str] = frozenset(),
    arrival: Arrival | None = None,
) -> ItemResult:
    """Run a prepared [N,C,H,W] batch (uint8 pixels or normalized float32), or JPEGs the
    engine decodes, through the batcher."""
    result = await call.served.backend.submit(
        pixels, deadline=call.deadline, capture=capture, arrival=arrival
    )
    call.trace.ran(
        queue_wait_s=result.queue_wait_s,
        inference_s=result.inference_s,
        batch_size=result.batch_size,
    )
    return result


def resolve_top_k(requested: int | None, classes: int) -> int:
    if requested is None:
        return min(DEFAULT_TOP_K, classes)
    if requested > classes:
        raise InvalidParameter(f"top_k must be between 1 and {classes} (the class count)")
    return requested


async def classify_images(request: Request, call: ModelCall, top_k: int | None) -> dict[str, Any]:
    card = call.served.card
    top_k = resolve_top_k(top_k, card.num_classes)
    result = await run_images(request, call)
    return {
        "model": call.served.name,
        "version": call.served.version,
        "predictions": rank_top_k(result.probabilities, card.labels, top_k),
    }
