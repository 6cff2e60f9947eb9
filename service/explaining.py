"""The explain use case: one image, prepared like classification, explained on the model's lane.

The router parses the query; this checks everything it can before the body is
read (method, layer, budget, target label), prepares the image like classify,
and hands it to the model's backend, which explains it on the model's lane (in
this process or the engine's), never in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from starlette.requests import Request

from service.errors import InvalidBody, TooManyImages
from service.explain_terms import CAM_METHODS, ExplainParams, Explanation, check_params
from service.features import LayerIndex, default_cam_layer
from service.inference import prepare_images
from service.state import ModelCall


@dataclass(frozen=True)
class Explained:
    explanation: Explanation
    pixels: NDArray[np.uint8]  # the uint8 [C,H,W] image the model saw
    layer: str | None


def _layer_name(call: ModelCall, params: ExplainParams) -> str | None:
    """The CAM layer (404 listing the valid names), checked before the body is read."""
    if params.method not in CAM_METHODS:
        return None
    index = LayerIndex(call.served.layers)
    return (index.get(params.layer) if params.layer else default_cam_layer(index.layers)).name


async def explain_image(request: Request, call: ModelCall, params: ExplainParams) -> Explained:
    card = call.served.card
    check_params(params, card.input.shape, card.labels)
    layer = _layer_name(call, params)
    arrival = getattr(request.state, "arrival", None)
    if arrival is not None:
        arrival.settle()  # it never joins a batch: classification must not wait for it
    try:
        pixels = await prepare_images(request, call, max_images=1)
    except TooManyImages:
        raise InvalidBody("an explanation is computed for one image per request") from None
    outcome = await call.served.backend.explain(pixels, params, layer, call.deadline)
    call.trace.ran(queue_wait_s=outcome.queue_wait_s, inference_s=outcome.inference_s, batch_size=1)
    return Explained(outcome.explanation, pixels[0], layer)
