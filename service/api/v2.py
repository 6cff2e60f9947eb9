"""The Open Inference Protocol (KServe V2) over HTTP: health, metadata and inference.

Same models, same batcher as /v1. Errors on these paths keep the protocol's
{"error": message} shape (see service/problems.py). Each model route serves its
unversioned and its /versions/{version} path from one handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from service import __version__
from service.api.deps import RegistryDep, VersionedModelCallDep
from service.responses import sized_response
from service.state import ModelCall
from service.v2.codec import HEADER_LENGTH
from service.v2.infer import infer
from service.v2.model import layer_shapes, metadata
from service.v2.schemas import (
    INFER_REQUEST_BODY,
    V2_ERROR_RESPONSES,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
)

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

EXTENSIONS = ["binary_tensor_data", "classification"]
MODEL = "/models/{name}"
VERSION = "/models/{name}/versions/{version}"


@router.get("", response_model=ServerMetadata, summary="Server metadata and extensions")
async def server_metadata() -> dict[str, Any]:
    return {"name": "cnn-serve", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", response_model=ServerLive, summary="Liveness: 200 while running")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    response_model=ServerReady,
    responses={503: {"model": ServerReady, "description": "starting or draining"}},
    summary="Readiness: 200 when every model is ready, 503 before and while draining",
)
async def server_ready(registry: RegistryDep) -> JSONResponse:
    return JSONResponse({"ready": registry.serving}, status_code=200 if registry.serving else 503)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def model_route(
    method: str, suffix: str, summary: str, **options: Any
) -> Callable[[Handler], Handler]:
    """One handler for a model's unversioned path and its /versions/{version} path."""

    def register(handler: Handler) -> Handler:
        router.add_api_route(MODEL + suffix, handler, methods=[method], summary=summary, **options)
        versioned = f"{summary}, for one version"
        router.add_api_route(
            VERSION + suffix, handler, methods=[method], summary=versioned, **options
        )
        return handler

    return register


@model_route(
    "GET",
    "/ready",
    "Model readiness",
    response_model=ModelReady,
    responses={**V2_ERROR_RESPONSES, 503: {"model": ModelReady, "description": "not ready"}},
)
async def model_ready(registry: RegistryDep, name: str, version: str | None = None) -> JSONResponse:
    registry.get(name, version)  # 404 for a model or version that is not served
    ready = registry.serving
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@model_route(
    "GET",
    "",
    "Model metadata: inputs and outputs, every feature-map layer included",
    response_model=ModelMetadata,
    responses=V2_ERROR_RESPONSES,
)
async def model_metadata(call: VersionedModelCallDep) -> dict[str, Any]:
    served, card = call.served, call.served.card
    return metadata(
        served.name, served.version, card.input, card.labels, layer_shapes(served.layers)
    )


@model_route(
    "POST",
    "/infer",
    "Inference: JSON or binary tensors in and out; joins the dynamic batcher",
    responses=V2_ERROR_RESPONSES,
    openapi_extra=INFER_REQUEST_BODY,
)
async def model_infer(request: Request, call: VersionedModelCallDep) -> Response:
    return await infer_response(request, call)


async def infer_response(request: Request, call: ModelCall) -> Response:
    answer = await infer(request, call)
    if answer.header_length is None:
        return sized_response([answer.body], "application/json")
    headers = {HEADER_LENGTH: str(answer.header_length)}
    return sized_response([answer.body], "application/octet-stream", headers)
