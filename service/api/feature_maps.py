"""Feature maps: what each layer of the served CNN computes for one image, and its kernels.

The maps and the prediction come from one forward pass through the batcher,
so a feature-map request shares batches with classification requests (and
with feature-map requests for other layers: the batch captures the union).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from models.feature_layer import FeatureLayer
from service.api.deps import ModelCallDep, TopKQuery
from service.api.schemas import IMAGE_PROBLEM_RESPONSES, IMAGE_REQUEST_BODY, PROBLEM_RESPONSES
from service.errors import InvalidBody, InvalidParameter, TooManyImages
from service.features import (
    LayerIndex,
    NpzStream,
    check_png_options,
    json_body_chunks,
    json_layer_chunks,
    kernels_json,
    prediction_headers,
)
from service.inference import resolve_top_k, run_images
from service.predictions import top_k as rank_top_k
from service.registry import ServedModel
from service.rendering import (
    MAX_SCALE,
    feature_grid_png,
    kernel_grid_png,
    parse_channels,
)
from service.responses import json_response, pieces, sized_response
from service.state import ModelCall

router = APIRouter(prefix="/v1", tags=["feature maps"])

Maps = dict[str, NDArray[np.float32]]

LayersQuery = Annotated[
    str | None,
    Query(description="comma-separated layer names (see /layers); default: every layer"),
]
FormatQuery = Annotated[
    Literal["json", "npz", "png"],
    Query(
        alias="format",
        description="json: shapes and per-channel statistics; npz: one float32 [C,H,W] "
        "array per layer; png: one layer's channels as an image grid",
    ),
]
IncludeQuery = Annotated[
    Literal["values"] | None,
    Query(description="json only: add each layer's values as nested [C][H][W] lists"),
]
ChannelsQuery = Annotated[
    str | None,
    Query(description="png only: channels to draw, e.g. 0-15 or 0,4,8-11; default: all"),
]
ScaleQuery = Annotated[
    int | None, Query(ge=1, le=MAX_SCALE, description="nearest-neighbour upscaling per pixel")
]
LayerPath = Annotated[str, Path(description="a layer name from /layers")]

_LAYER_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **IMAGE_PROBLEM_RESPONSES,
    404: {**IMAGE_PROBLEM_RESPONSES[404], "description": "unknown_model, unknown_layer"},
    413: {
        **IMAGE_PROBLEM_RESPONSES[413],
        "description": "payload_too_large, too_many_images, image_too_large, too_many_pixels, "
        "response_too_large",
    },
}


@router.get(
    "/models/{name}/layers",
    summary="The layers whose output is a feature map, in forward order",
    responses=PROBLEM_RESPONSES,
)
async def list_layers(call: ModelCallDep) -> Response:
    served = call.served
    return json_response(
        {
            "model": served.name,
            "input_shape": list(served.card.input.shape),
            "layers": [layer.describe() for layer in served.layers],
        }
    )


async def _one_image_maps(
    request: Request, call: ModelCall, layers: list[FeatureLayer]
) -> tuple[NDArray[np.float32], Maps]:
    """One forward pass through the batcher: the image's probabilities and its maps."""
    capture = frozenset(layer.name for layer in layers)
    try:
        result = await run_images(request, call, capture=capture, max_images=1)
    except TooManyImages:
        raise InvalidBody("feature maps are computed for one image per request") from None
    # In forward order; each C-contiguous (channels_last maps come back strided).
    maps = {layer.name: np.ascontiguousarray(result.features[layer.name][0]) for layer in layers}
    return result.probabilities, maps


@router.post(
    "/models/{name}/feature-maps",
    summary="One image's feature maps and prediction, from one forward pass",
    responses=_LAYER_PROBLEMS,
    openapi_extra=IMAGE_REQUEST_BODY,
)
@router.post(
    "/models/{name}/versions/{version}/feature-maps",
    summary="Feature maps and prediction from one version of the model",
    responses=_LAYER_PROBLEMS,
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def feature_maps(
    request: Request,
    call: ModelCallDep,
    layers: LayersQuery = None,
    fmt: FormatQuery = "json",
    include: IncludeQuery = None,
    channels: ChannelsQuery = None,
    scale: ScaleQuery = None,
    top_k: TopKQuery = None,
) -> Response:
    served = call.served
    chosen = LayerIndex(served.layers).select(layers)
    check_png_options(chosen, fmt, channels, scale)
    if fmt == "png":  # refuse bad channels before running the model
        parse_channels(channels, chosen[0].output_shape[0])
    top_k = resolve_top_k(top_k, served.card.num_classes)
    probabilities, maps = await _one_image_maps(request, call, chosen)
    prediction = rank_top_k(probabilities, served.card.labels, top_k)[0]
    if fmt == "npz":
        return _npz_response(served, maps, prediction, call.settings.max_response_bytes)
    if fmt == "png":
        return await _png_response(served, chosen[0], maps, prediction, channels, scale or 1)
    limit = call.settings.max_response_bytes
    return await _json_response(served, chosen, maps, prediction, include == "values", limit)


async def _json_response(
    served: ServedModel,
    layers: list[FeatureLayer],
    maps: Maps,
    prediction: dict[str, Any],
    values: bool,
    limit: int,
) -> Response:
    head = {
        "model": served.name,
        "version": served.version,
        "dtype": served.facts.dtype_name,
        "prediction": prediction,
    }
    entries = await run_in_threadpool(json_layer_chunks, layers, maps, values=values, limit=limit)
    # Values can run to megabytes: the encoded layers are sent as they are, never joined.
    return sized_response(json_body_chunks(head, entries), "application/json")


def _npz_response(
    served: ServedModel, maps: Maps, prediction: dict[str, Any], limit: int
) -> Response:
    stream = NpzStream(maps)
    stream.check(limit)
    headers = {
        **prediction_headers(prediction, served.facts.dtype_name),
        "Content-Length": str(stream.size),
        "Content-Disposition": f'attachment; filename="{served.name}-feature-maps.npz"',
    }
    # A sync generator: Starlette runs each step in its thread pool, off the event loop.
    return StreamingResponse(
        pieces(stream.chunks()), media_type="application/x-npz", headers=headers
    )


async def _png_response(
    served: ServedModel,
    layer: FeatureLayer,
    maps: Maps,
    prediction: dict[str, Any],
    channels: str | None,
    scale: int,
) -> Response:
    array = maps[layer.name]
    picked = parse_channels(channels, array.shape[0])
    png = await run_in_threadpool(feature_grid_png, array, channels=picked, scale=scale)
    headers = prediction_headers(prediction, served.facts.dtype_name)
    return Response(png, media_type="image/png", headers=headers)


@router.get(
    "/models/{name}/layers/{layer}/kernels",
    summary="A convolution layer's learned filters, as an image grid or values",
    responses={
        **PROBLEM_RESPONSES,
        404: {**PROBLEM_RESPONSES[404], "description": "unknown_model, unknown_layer"},
        422: {**PROBLEM_RESPONSES[422], "description": "not_convolution, invalid_parameter"},
    },
)
async def kernels(
    call: ModelCallDep,
    layer: LayerPath,
    fmt: Annotated[Literal["png", "json"], Query(alias="format")] = "png",
    scale: ScaleQuery = None,
) -> Response:
    served = call.served
    entry = LayerIndex(served.layers).kernels_of(layer)
    found = await served.backend.kernels(entry)
    weights = found.weights
    if fmt == "png":
        png = await run_in_threadpool(kernel_grid_png, weights, scale=scale)
        return Response(png, media_type="image/png")
    if scale is not None:
        raise InvalidParameter("scale applies to format=png only")
    body = {
        "model": served.name,
        "layer": entry.describe(),
        "shape": list(weights.shape),
        "groups": found.groups,
        "weights": weights,
        "bias": found.bias,
    }
    encoded = await run_in_threadpool(kernels_json, body, call.settings.max_response_bytes)
    return sized_response([encoded], "application/json")
