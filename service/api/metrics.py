"""GET /metrics: the Prometheus exposition of the app's own registry."""

from __future__ import annotations

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response

from service.observability import METRICS_PATH


def add_metrics_route(app: FastAPI, registry: CollectorRegistry) -> None:
    # A plain function: FastAPI runs it on its thread pool, so collecting never blocks the loop.
    def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), headers={"content-type": content_type})

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
