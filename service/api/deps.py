"""Dependencies shared by the routers, as Annotated aliases that keep the routes short."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from service.errors import NotReady
from service.registry import ModelRegistry, ServedModel
from service.state import AppState

# Dependencies are coroutines on purpose: FastAPI runs plain `def` dependencies in a
# worker thread, a thread hop per dependency per request on the hot path.


async def get_state(request: Request) -> AppState:
    state: AppState = request.state.app_state
    return state


StateDep = Annotated[AppState, Depends(get_state)]


# The dependencies below read the state straight from the request rather than through
# StateDep: each level of nesting costs FastAPI's resolver time on every request.


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.state.app_state.registry
    return registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def _serving(registry: ModelRegistry) -> ModelRegistry:
    # While draining, new requests get 503 not_ready at once (a load balancer retries them
    # elsewhere) and stop coming; what was accepted before the signal still finishes.
    if not registry.serving:
        raise NotReady("the server is " + ("shutting down" if registry.draining else "starting"))
    return registry


ModelName = Annotated[str, Path(description="a served model's name")]


async def named_model(request: Request, name: ModelName) -> ServedModel:
    return _serving(request.state.app_state.registry).get(name)


async def default_model(request: Request) -> ServedModel:
    return _serving(request.state.app_state.registry).get(None)


NamedModelDep = Annotated[ServedModel, Depends(named_model)]
DefaultModelDep = Annotated[ServedModel, Depends(default_model)]


def _deadline(state: AppState) -> float:
    return time.monotonic() + state.settings.request_timeout_s


async def request_deadline(request: Request) -> float:
    """Monotonic time by which the request must be answered."""
    return _deadline(request.state.app_state)


DeadlineDep = Annotated[float, Depends(request_deadline)]


@dataclass(frozen=True)
class ModelCall:
    """Everything an inference route needs, resolved by one dependency (the hot path)."""

    state: AppState
    served: ServedModel
    deadline: float


async def named_model_call(request: Request, name: ModelName) -> ModelCall:
    state: AppState = request.state.app_state
    return ModelCall(state, _serving(state.registry).get(name), _deadline(state))


async def default_model_call(request: Request) -> ModelCall:
    state: AppState = request.state.app_state
    return ModelCall(state, _serving(state.registry).get(None), _deadline(state))


NamedModelCallDep = Annotated[ModelCall, Depends(named_model_call)]
DefaultModelCallDep = Annotated[ModelCall, Depends(default_model_call)]

TopKQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=100_000,
        description="labels per image, best first; default 5 (or the class count if smaller)",
    ),
]
