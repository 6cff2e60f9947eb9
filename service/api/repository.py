"""Model management: the Open Inference Protocol's repository extension, as tritonclient calls it.

    POST /v2/repository/index                   every model version and its state
    POST /v2/repository/models/{name}/load      read the model's folder again, serve its policy
    POST /v2/repository/models/{name}/unload    stop serving the model

Only with a model repository (CNN_MODEL_REPOSITORY); load and unload only with
CNN_MODEL_CONTROL=explicit. Every path here takes the admin key alone
(service.security): without CNN_ADMIN_API_KEY the API is off.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.errors import InvalidBody, ModelControlUnavailable
from service.model_repository import RepositoryControl
from service.state import AppState

router = APIRouter(prefix="/v2/repository", tags=["model repository"])

# The load parameters Triton takes that this server does not: a model given in the request.
_UNSUPPORTED_LOAD_PARAMETERS = ("config", "file:")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {}}  # the V2 error body (service.openapi)


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("invalid_body; model_load_failed (load: the reason of each version that failed)"),
    401: _error("unauthorized: the admin key is missing or wrong"),
    403: _error("forbidden: CNN_ADMIN_API_KEY is not set (the API is off), or the inference key"),
    404: _error("unknown_model: no such model in the repository (load) or loaded (unload)"),
    409: _error("model_control_unavailable: no repository, or load/unload outside explicit mode"),
}


class IndexEntry(BaseModel):
    name: str
    version: str
    state: str  # READY, LOADING, UNLOADING or UNAVAILABLE
    reason: str


async def _body(request: Request) -> dict[str, Any]:
    """The optional JSON object body; tritonclient sends an empty one for the index."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    return body


def _control(request: Request) -> RepositoryControl:
    state: AppState = request.state.app_state
    if state.repository is None:
        raise ModelControlUnavailable(
            "no model repository is served: set CNN_MODEL_REPOSITORY to manage models"
        )
    return state.repository


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidBody("'parameters' must be a JSON object")
    return parameters


@router.post(
    "/index",
    summary="Every model version in the repository, with its state",
    response_model=list[IndexEntry],
    responses=RESPONSES,
)
async def repository_index(request: Request) -> JSONResponse:
    ready = (await _body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidBody("'ready' must be true or false")
    return JSONResponse(await _control(request).index(ready_only=ready))


@router.post(
    "/models/{name}/load",
    summary="Load the versions the model's policy names now; the served ones keep answering",
    responses=RESPONSES,
)
async def load_model(request: Request, name: str) -> JSONResponse:
    parameters = _parameters(await _body(request))
    for key in parameters:
        if key.startswith(_UNSUPPORTED_LOAD_PARAMETERS):
            raise InvalidBody(
                f"parameter {key!r} is not supported: models load from the repository folder"
            )
    await _control(request).load(name)
    return JSONResponse({})


@router.post(
    "/models/{name}/unload",
    summary="Stop serving every version of the model; what it accepted is answered",
    responses=RESPONSES,
)
async def unload_model(request: Request, name: str) -> JSONResponse:
    _parameters(await _body(request))
    await _control(request).unload(name)
    return JSONResponse({})
