"""Explanations and activation monitoring: which pixels drove a prediction, and how the
layers behave on live traffic."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.api.deps import ModelCallDep, TopKQuery
from service.api.schemas import IMAGE_PROBLEM_RESPONSES, IMAGE_REQUEST_BODY, PROBLEM_RESPONSES
from service.explain_terms import BASELINES, METHODS, Baseline, ExplainParams, Method
from service.explaining import Explained, explain_image
from service.features import prediction_headers
from service.heatmaps import DEFAULT_ALPHA, heatmap_png, overlay_png
from service.inference import resolve_top_k
from service.predictions import top_k as rank_top_k
from service.rendering import MAX_SCALE
from service.responses import json_response
from service.state import ModelCall

router = APIRouter(prefix="/v1", tags=["explanations"])

_EXPLAIN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **IMAGE_PROBLEM_RESPONSES,
    404: {**IMAGE_PROBLEM_RESPONSES[404], "description": "unknown_model, unknown_layer"},
    422: {
        **IMAGE_PROBLEM_RESPONSES[422],
        "description": "invalid_parameter, unknown_target, explain_budget_exceeded",
    },
}


@router.post(
    "/models/{name}/explain",
    summary="Which pixels drove the prediction: an attribution map of one image",
    description=f"Methods: {', '.join(METHODS)}; baselines (integrated_gradients, "
    f"occlusion): {', '.join(BASELINES)}. Runs on the model's explanation lane, never "
    "inside a classification batch; 503 with Retry-After when its queue is full.",
    responses=_EXPLAIN_PROBLEMS,
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def explain(
    request: Request,
    call: ModelCallDep,
    method: Method = "gradcam",
    target: Annotated[str | None, Query(description="top1 (default), a label or an index")] = None,
    layer: Annotated[str | None, Query(description="CAM methods: a layer from /layers")] = None,
    steps: Annotated[int, Query(ge=1, description="integrated_gradients, at most 256")] = 32,
    baseline: Baseline = "black",
    window: Annotated[int | None, Query(ge=1, description="occlusion: square side")] = None,
    stride: Annotated[int | None, Query(ge=1, description="occlusion: step")] = None,
    fmt: Annotated[Literal["json", "npz", "png"], Query(alias="format")] = "json",
    view: Annotated[Literal["overlay", "heatmap"], Query(description="png only")] = "overlay",
    alpha: Annotated[float, Query(ge=0, le=1, description="png overlay opacity")] = DEFAULT_ALPHA,
    scale: Annotated[int | None, Query(ge=1, le=MAX_SCALE, description="png only")] = None,
    top_k: TopKQuery = None,
) -> Response:
    top_k = resolve_top_k(top_k, call.served.card.num_classes)
    params = ExplainParams(method, target, layer, steps, baseline, window, stride)
    explained = await explain_image(request, call, params)
    result = explained.explanation
    prediction = rank_top_k(result.probabilities[np.newaxis], call.served.card.labels, top_k)[0]
    if fmt == "png":
        return await _png(call, explained, prediction, view, alpha, scale)
    if fmt == "npz":
        return _npz(call, explained, prediction)
    return json_response(_describe(call, explained, prediction))


def _describe(call: ModelCall, explained: Explained, prediction: dict[str, Any]) -> dict[str, Any]:
    result = explained.explanation
    body: dict[str, Any] = {
        "model": call.served.name,
        "method": result.method,
        "target": {"index": result.target, "label": call.served.card.labels[result.target]},
        "layer": explained.layer,
        "prediction": prediction,
        "shape": list(result.attribution.shape),
        "min": result.minimum,
        "max": result.maximum,
        "attribution": result.attribution,
    }
    return body


def _headers(explained: Explained, prediction: dict[str, Any]) -> dict[str, str]:
    return {
        **prediction_headers(prediction, "float32"),
        "X-Explanation-Method": explained.explanation.method,
        "X-Explanation-Target": str(explained.explanation.target),
    }


def _npz(call: ModelCall, explained: Explained, prediction: dict[str, Any]) -> Response:
    buffer = io.BytesIO()
    result = explained.explanation
    np.savez(buffer, attribution=result.attribution, probabilities=result.probabilities)
    headers = _headers(explained, prediction)
    return Response(buffer.getvalue(), media_type="application/x-npz", headers=headers)


async def _png(
    call: ModelCall,
    explained: Explained,
    prediction: dict[str, Any],
    view: str,
    alpha: float,
    scale: int | None,
) -> Response:
    result = explained.explanation
    if view == "heatmap":
        png = await run_in_threadpool(heatmap_png, result.attribution, scale=scale)
    else:
        pixels = explained.pixels
        png = await run_in_threadpool(
            overlay_png, result.attribution, pixels, alpha=alpha, scale=scale
        )
    return Response(png, media_type="image/png", headers=_headers(explained, prediction))


@router.get(
    "/models/{name}/activations",
    summary="Activation statistics of live traffic, their reference and drift",
    responses=PROBLEM_RESPONSES,
)
async def activations(call: ModelCallDep) -> Response:
    body: dict[str, Any] = {"model": call.served.name}
    body.update(await call.served.backend.activations())
    return json_response(body)
