"""The Open Inference Protocol (KServe V2) over HTTP: health, metadata and inference.

Same models, same batcher as /v1. Errors on these paths keep the protocol's
{"error": message} shape (see service/problems.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from service import __version__
from service.api.deps import DeadlineDep, NamedModelDep, RegistryDep, StateDep
from service.errors import UnknownModel
from service.registry import ServedModel
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


def _check_version(served: ServedModel, version: str) -> None:
    if version != served.loaded.card.version:
        raise UnknownModel(
            f"model {served.name!r} has no version {version!r}; "
            f"the served version is {served.loaded.card.version!r}"
        )


async def versioned_model(
    served: NamedModelDep, version: Annotated[str, Path(description="the model's version")]
) -> ServedModel:
    _check_version(served, version)
    return served


VersionedModelDep = Annotated[ServedModel, Depends(versioned_model)]


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


def _model_ready(registry: RegistryDep, name: str) -> JSONResponse:
    registry.get(name)  # 404 for a model that is not served
    ready = registry.serving
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **V2_ERROR_RESPONSES,
    503: {"model": ModelReady, "description": "not ready"},
}


@router.get(
    "/models/{name}/ready",
    response_model=ModelReady,
    responses=_READY_RESPONSES,
    summary="Model readiness",
)
async def model_ready(registry: RegistryDep, name: Annotated[str, Path()]) -> JSONResponse:
    return _model_ready(registry, name)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReady,
    responses=_READY_RESPONSES,
    summary="Model readiness, for one version",
)
async def model_version_ready(
    registry: RegistryDep, name: Annotated[str, Path()], version: Annotated[str, Path()]
) -> JSONResponse:
    _check_version(registry.get(name), version)
    return _model_ready(registry, name)


def _metadata(served: ServedModel) -> dict[str, Any]:
    card = served.loaded.card
    return metadata(served.name, card.version, card.input, card.labels, layer_shapes(served.layers))


@router.get(
    "/models/{name}",
    response_model=ModelMetadata,
    responses=V2_ERROR_RESPONSES,
    summary="Model metadata: inputs and outputs, every feature-map layer included",
)
async def model_metadata(served: NamedModelDep) -> dict[str, Any]:
    return _metadata(served)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=V2_ERROR_RESPONSES,
    summary="Model metadata, for one version",
)
async def model_version_metadata(served: VersionedModelDep) -> dict[str, Any]:
    return _metadata(served)


async def _infer(
    request: Request, state: StateDep, served: ServedModel, deadline: float
) -> Response:
    answer = await infer(request, state, served, deadline=deadline)
    if answer.header_length is None:
        return Response(answer.body, media_type="application/json")
    headers = {HEADER_LENGTH: str(answer.header_length)}
    return Response(answer.body, headers=headers, media_type="application/octet-stream")


@router.post(
    "/models/{name}/infer",
    responses=V2_ERROR_RESPONSES,
    openapi_extra=INFER_REQUEST_BODY,
    summary="Inference: JSON or binary tensors in and out; joins the dynamic batcher",
)
async def model_infer(
    request: Request, state: StateDep, served: NamedModelDep, deadline: DeadlineDep
) -> Response:
    return await _infer(request, state, served, deadline)


@router.post(
    "/models/{name}/versions/{version}/infer",
    responses=V2_ERROR_RESPONSES,
    openapi_extra=INFER_REQUEST_BODY,
    summary="Inference with one version of a model",
)
async def model_version_infer(
    request: Request, state: StateDep, served: VersionedModelDep, deadline: DeadlineDep
) -> Response:
    return await _infer(request, state, served, deadline)
