"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import RegistryDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: 200 while the process runs")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: 200 once every model is loaded and warmed up; 503 before and while draining",
    responses={503: {"description": "starting or draining"}},
)
async def readyz(registry: RegistryDep) -> JSONResponse:
    if registry.serving:
        return JSONResponse({"status": "ready", "models": sorted(registry.models)})
    status = "draining" if registry.draining else "starting"
    return JSONResponse({"status": status}, status_code=503)
