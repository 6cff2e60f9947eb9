"""Dependencies shared by the routers, as Annotated aliases that keep the routes short.

Every route that names a model takes one `ModelCall`: the app state, the served
model, the request's deadline and its trace, resolved by one dependency. The
versioned and unversioned paths (and /v1's default and named classify) share one
handler each, as MLServer's do: where a path has no {name} or {version}, the
parameter may come as a query parameter instead, and is otherwise the default.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from service.errors import NotReady
from service.registry import ModelRegistry
from service.state import AppState, ModelCall
from service.trace import trace_of

# Dependencies are coroutines on purpose: FastAPI runs plain `def` dependencies in a
# worker thread, a thread hop per dependency per request on the hot path. They read
# the state straight from the request: each level of nesting costs the resolver time.


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.state.app_state.registry
    return registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def model_call_for(request: Request, name: str | None, version: str | None = None) -> ModelCall:
    state: AppState = request.state.app_state
    registry = state.registry
    # While draining, new requests get 503 not_ready at once (a load balancer retries them
    # elsewhere) and stop coming; what was accepted before the signal still finishes.
    if not registry.serving:
        raise NotReady("the server is " + ("shutting down" if registry.draining else "starting"))
    served = registry.get(name, version)
    trace = trace_of(request.scope)
    trace.model = served.name
    # From arrival: the deadline covers the upload and the decoding, not only the queue.
    return ModelCall(state, served, trace.arrived + state.settings.request_timeout_s, trace)


async def model_call(
    request: Request, name: str | None = None, version: str | None = None
) -> ModelCall:
    return model_call_for(request, name, version)


async def versioned_model_call(
    request: Request, name: str, version: str | None = None
) -> ModelCall:
    return model_call_for(request, name, version)


ModelCallDep = Annotated[ModelCall, Depends(model_call)]
VersionedModelCallDep = Annotated[ModelCall, Depends(versioned_model_call)]

TopKQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=100_000,
        description="labels per image, best first; default 5 (or the class count if smaller)",
    ),
]
