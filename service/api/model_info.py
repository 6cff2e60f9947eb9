"""Model metadata: /v1/models and /v1/models/{name}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import ModelCallDep, RegistryDep
from service.api.schemas import PROBLEM_RESPONSES, ModelList, ModelMetadata

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList, summary="Every served model's metadata")
async def list_models(registry: RegistryDep) -> dict[str, Any]:
    return {"models": [served.metadata() for served in registry.served()]}


@router.get(
    "/models/{name}",
    response_model=ModelMetadata,
    responses=PROBLEM_RESPONSES,
    summary="One model's metadata: card, input spec, device, dtype, batching",
)
@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=PROBLEM_RESPONSES,
    summary="One version's metadata",
)
async def get_model(call: ModelCallDep) -> dict[str, Any]:
    return call.served.metadata()
