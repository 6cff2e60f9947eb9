"""The explain use case: one image, prepared like classification, explained on the model's lane.

The router parses the query; this checks everything it can before the body is
read (method, layer, budget, target label), prepares the image like classify,
and runs the rest on the lane's thread (normalization included: the event loop
runs no torch), never in a batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from starlette.requests import Request

from service.cam import default_cam_layer
from service.errors import InvalidBody, NotReady, TooManyImages
from service.explain_lane import Yielding
from service.explanations import (
    CAM_METHODS,
    Baseline,
    ExplainRequest,
    Explanation,
    Method,
    check_budget,
    explain,
    resolve_target,
)
from service.features import LayerIndex
from service.inference import prepare_images
from service.state import ModelCall


@dataclass(frozen=True)
class ExplainParams:
    method: Method = "gradcam"
    target: str | None = None  # "top1" (None), a label, or a class index
    layer: str | None = None  # CAM methods; None: the last convolutional block
    steps: int = 32
    baseline: Baseline = "black"
    window: int | None = None
    stride: int | None = None


@dataclass(frozen=True)
class Explained:
    explanation: Explanation
    pixels: torch.Tensor  # the uint8 [C,H,W] image the model saw
    layer: str | None


def _layer_name(call: ModelCall, params: ExplainParams) -> str | None:
    """The CAM layer (404 listing the valid names), checked before the body is read."""
    if params.method not in CAM_METHODS:
        return None
    index = LayerIndex(call.served.layers)
    return (index.get(params.layer) if params.layer else default_cam_layer(index.layers)).name


def _check(call: ModelCall, params: ExplainParams) -> str | None:
    card = call.served.card
    probe = ExplainRequest(
        params.method, 0, layer=torch.nn.Identity(), steps=params.steps,
        baseline=params.baseline, window=params.window, stride=params.stride,
    )  # fmt: skip
    check_budget(probe, card.input.shape)
    if params.target not in (None, "", "top1"):
        resolve_target(params.target, card.labels, [])  # an unknown label is refused now
    return _layer_name(call, params)


def _run(
    module: Yielding,
    pixels: torch.Tensor,
    call: ModelCall,
    params: ExplainParams,
    layer: str | None,
) -> Explanation:
    """On the lane's thread: resolve the target (top1 needs a forward pass), then explain."""
    device = next(module.parameters()).device
    x = call.served.loaded.preprocess.normalize(pixels).to(device)
    card = call.served.card
    scores: list[float] = []
    if params.target in (None, "", "top1"):
        with torch.no_grad():
            scores = module(x)[0].float().cpu().tolist()
    target = resolve_target(params.target, card.labels, scores)
    found = next((f for f in call.served.layers if f.name == layer), None)
    chosen = ExplainRequest(
        params.method, target,
        layer=module.module.get_submodule(found.module) if found else None,
        layer_call=found.call if found else 0,
        steps=params.steps, baseline=params.baseline, window=params.window, stride=params.stride,
    )  # fmt: skip
    return explain(module, x, chosen, preprocess=call.served.loaded.preprocess)


async def explain_image(request: Request, call: ModelCall, params: ExplainParams) -> Explained:
    lane = call.served.lane
    if lane is None:
        raise NotReady(f"model {call.served.name!r} has no explanation lane")
    layer = _check(call, params)
    arrival = getattr(request.state, "arrival", None)
    if arrival is not None:
        arrival.settle()  # it never joins a batch: classification must not wait for it
    try:
        pixels = await prepare_images(request, call, max_images=1)
    except TooManyImages:
        raise InvalidBody("an explanation is computed for one image per request") from None
    queued = time.perf_counter()
    started: list[float] = []

    def job(module: Yielding) -> Explanation:
        started.append(time.perf_counter())
        return _run(module, pixels, call, params, layer)

    explanation = await lane.run(job, deadline=call.deadline)
    done = time.perf_counter()
    call.trace.ran(queue_wait_s=started[0] - queued, inference_s=done - started[0], batch_size=1)
    return Explained(explanation, pixels[0], layer)
