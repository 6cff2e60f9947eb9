"""The two hot routes without FastAPI's per-request machinery: classify and V2 infer.

For every request FastAPI solves the route's dependencies and validates its
parameters in a general way; on POST /v1/classify that cost about as much as the
route's own work (an HTTP worker's profile at 64 concurrent digit requests: some
22% of its samples between the router and the endpoint). This innermost
middleware answers those paths itself, with the same `ModelCall` and use cases
as the routes, inside every other middleware (limits, timeouts, security,
observability), its errors rendered by the app's own handlers. The FastAPI
routes stay: they describe the API in /openapi.json, and they answer every
request whose query string the lane does not read itself (a malformed top_k gets
FastAPI's own 422 problem), so both give the same answers and the same errors.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import model_call_for
from service.api.v2 import infer_response
from service.inference import classify_images
from service.problems import handled_error_response
from service.responses import json_response
from service.state import ModelCall

TOP_K_MAX = 100_000  # as service.api.deps.TopKQuery
Handler = Callable[[Request, ModelCall, int | None], Awaitable[Response]]


async def _classify(request: Request, call: ModelCall, top_k: int | None) -> Response:
    return json_response(await classify_images(request, call, top_k))


async def _infer(request: Request, call: ModelCall, top_k: int | None) -> Response:
    return await infer_response(request, call)


@dataclass(frozen=True)
class LaneRoute:
    """What a routed request carries as its route: here, only its template
    (service.observability.route_template reads `path_format` for the endpoint label)."""

    path_format: str
    pattern: re.Pattern[str]


def _lane(path: str) -> LaneRoute:
    pattern, path_format, _ = compile_path(path)
    return LaneRoute(path_format, pattern)


# The route, handler, whether it takes top_k.
LANES: tuple[tuple[LaneRoute, Handler, bool], ...] = (
    (_lane("/v1/classify"), _classify, True),
    (_lane("/v1/models/{name}/classify"), _classify, True),
    (_lane("/v1/models/{name}/versions/{version}/classify"), _classify, True),
    (_lane("/v2/models/{name}/infer"), _infer, False),
    (_lane("/v2/models/{name}/versions/{version}/infer"), _infer, False),
)


def _top_k(query: str, allowed: bool) -> tuple[bool, int | None]:
    """(handled here, top_k): only an empty query or a plain in-range top_k is."""
    if not query:
        return True, None
    if not allowed or "&" in query or not query.startswith("top_k="):
        return False, None
    digits = query[len("top_k=") :]
    if not digits.isdigit() or not 1 <= int(digits) <= TOP_K_MAX:
        return False, None
    return True, int(digits)


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route, handler, takes_top_k in LANES:
                match = route.pattern.match(scope["path"])
                if match is None:
                    continue
                query = scope["query_string"].decode("latin-1")
                handled, top_k = _top_k(query, takes_top_k)
                if handled:
                    # As the router would: the request carries its route and parameters,
                    # so observability need not match the path against every route again.
                    scope["route"], scope["path_params"] = route, match.groupdict()
                    await self._answer(scope, receive, send, handler, top_k)
                    return
                break
        await self.app(scope, receive, send)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        handler: Handler,
        top_k: int | None,
    ) -> None:
        request = Request(scope, receive, send)
        params = scope["path_params"]
        try:
            call = model_call_for(request, params.get("name"), params.get("version"))
            response = await handler(request, call, top_k)
        except Exception as exc:
            handled = await handled_error_response(request, exc)
            if handled is None:
                raise  # RequestObservability answers 500 and logs it, as for any route
            response = handled
        await response(scope, receive, send)
