"""GET /metrics: the Prometheus exposition of the app's own registry, or of the whole pod.

With several processes a scrape sums every process's files (prometheus-client's
multiprocess mode) and adds the engine's live gauges, asked over its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from starlette.responses import Response

from service.errors import ServiceError
from service.metrics import Metrics
from service.observability import METRICS_PATH


def add_metrics_route(app: FastAPI, metrics: Metrics) -> None:
    if metrics.multiprocess:
        app.add_api_route(
            METRICS_PATH, _pod_metrics(metrics), methods=["GET"], include_in_schema=False
        )
        return
    registry = metrics.registry

    # A plain function: FastAPI runs it on its thread pool, so collecting never blocks the loop.
    def process_metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), headers={"content-type": content_type})

    app.add_api_route(METRICS_PATH, process_metrics, methods=["GET"], include_in_schema=False)


def _pod_metrics(metrics: Metrics) -> Callable[[], Awaitable[Response]]:
    async def pod_metrics() -> Response:
        # The text format only: pieces of it can be joined (OpenMetrics ends with # EOF).
        text = await asyncio.to_thread(generate_latest, metrics.scrape_registry())
        if metrics.remote_live is not None:
            # Restarting, the engine has no live gauges to give; every counter is still here.
            with contextlib.suppress(ServiceError):
                text += await metrics.remote_live()
        return Response(text, headers={"content-type": CONTENT_TYPE_LATEST})

    return pod_metrics
