"""Dependencies shared by the routers, as Annotated aliases that keep the routes short."""

from __future__ import annotations

import time
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


async def get_registry(state: StateDep) -> ModelRegistry:
    return state.registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def _serving(registry: ModelRegistry) -> ModelRegistry:
    # Readiness turns 503 as soon as draining starts, but requests still routed here while
    # the endpoints drain are served: the batcher refuses new work only once it stops.
    if not registry.ready:
        raise NotReady("the server is starting")
    return registry


async def named_model(
    registry: RegistryDep, name: Annotated[str, Path(description="a served model's name")]
) -> ServedModel:
    return _serving(registry).get(name)


async def default_model(registry: RegistryDep) -> ServedModel:
    return _serving(registry).get(None)


NamedModelDep = Annotated[ServedModel, Depends(named_model)]
DefaultModelDep = Annotated[ServedModel, Depends(default_model)]


async def request_deadline(state: StateDep) -> float:
    """Monotonic time by which the request must be answered."""
    return time.monotonic() + state.settings.request_timeout_s


DeadlineDep = Annotated[float, Depends(request_deadline)]

TopKQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=100_000,
        description="labels per image, best first; default 5 (or the class count if smaller)",
    ),
]
