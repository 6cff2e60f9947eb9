"""The application factory: `create_app(settings)` builds everything; nothing exists at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI

from service import __version__
from service.api import classify, explain, feature_maps, health, model_info, repository, ui, v2
from service.api.docs import docs_router
from service.api.fast_lane import FastLane
from service.api.metrics import add_metrics_route
from service.arrivals import Arrivals
from service.heap import freeze_startup_heap
from service.lifecycle import Lifecycle
from service.metrics import Metrics, start_exporter
from service.middleware import ArrivalTracking, BodyReadTimeout, BodySizeLimit, HeaderSizeLimit
from service.model_repository import RepositoryControl
from service.observability import RequestObservability
from service.openapi import install_openapi
from service.pipeline import ImagePipeline
from service.problems import install_problem_handlers
from service.registry import ModelRegistry
from service.security import install_security
from service.settings import Settings
from service.spool import SpoolBudget
from service.state import AppState

log = logging.getLogger("service.app")


class ModelSource(Protocol):
    """Where the served models come from: loaded here, or an engine process reached by IPC."""

    async def open(self, registry: ModelRegistry, metrics: Metrics) -> None: ...

    async def close(self, grace_s: float) -> None: ...

    def repository_control(self) -> RepositoryControl | None:
        """The model repository's management, when the models come from one."""
        ...


def _model_source(settings: Settings, arrivals: Arrivals, engine: Path | None) -> ModelSource:
    # Imported here: an HTTP worker must never import torch, which the local source needs.
    if engine is not None:
        from service.ipc.client import EngineLink

        return EngineLink(engine, arrivals)
    from service.loading import LocalModels

    return LocalModels(settings, arrivals)


async def _open_models(state: AppState, source: ModelSource, metrics: Metrics) -> None:
    await source.open(state.registry, metrics)
    state.repository = source.repository_control()
    if state.settings.default_model:
        state.registry.default_name = state.settings.default_model
    state.registry.ready = True


async def _drain(state: AppState, source: ModelSource) -> None:
    state.registry.draining = True
    await source.close(state.settings.shutdown_grace_s)
    state.executor.shutdown(wait=False, cancel_futures=True)


def _lifespan(
    settings: Settings,
    metrics: Metrics,
    arrivals: Arrivals,
    lifecycle: Lifecycle,
    engine: Path | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, AppState]]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        executor = ThreadPoolExecutor(settings.preprocess_workers, thread_name_prefix="preprocess")
        lifecycle.registry = ModelRegistry()  # each lifespan starts with none loaded
        source = _model_source(settings, arrivals, engine)
        state = AppState(
            settings=settings,
            registry=lifecycle.registry,
            executor=executor,
            pipeline=ImagePipeline(
                executor,
                workers=settings.preprocess_workers,
                max_pixels=settings.max_image_pixels,
                max_request_pixels=settings.max_request_pixels,
            ),
            spool=SpoolBudget(settings.max_spool_bytes),
        )
        metrics.watch_readiness(lambda: state.registry.serving)
        # Before loading: a scrape during start-up already says cnn_ready 0.
        # With an engine, the metrics port is the engine's: it serves the whole pod.
        metrics_port = None if engine is not None else settings.metrics_port
        exporter = start_exporter(metrics.registry, host=settings.host, port=metrics_port)
        try:
            try:
                await _open_models(state, source, metrics)
            except Exception as exc:
                lifecycle.startup_error = exc  # serve() reports it in one line
                raise
            if lifecycle.freeze_heap_when_ready:
                freeze_startup_heap()
            log.info("ready", extra={"models": sorted(state.registry.models)})
            yield {"app_state": state}
        finally:
            try:
                await _drain(state, source)
            finally:
                exporter.close()

    return lifespan


def _install_middleware(
    app: FastAPI, settings: Settings, metrics: Metrics, arrivals: Arrivals
) -> None:
    """Added innermost first: each one added wraps those added before it."""
    app.add_middleware(FastLane)  # the hot routes, inside every limit below
    app.add_middleware(
        BodyReadTimeout,
        idle_s=settings.body_timeout_s,
        request_timeout_s=settings.request_timeout_s,
    )
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(ArrivalTracking, arrivals=arrivals)
    app.add_middleware(HeaderSizeLimit, limit=settings.max_header_bytes)
    install_security(app, settings)  # refused requests never reach the body
    # Outermost: ids, timing, metrics and the log line for every answer, refusals included.
    app.add_middleware(RequestObservability, metrics=metrics, routes=app.router.routes)


def create_app(
    settings: Settings, lifecycle: Lifecycle | None = None, *, engine: Path | None = None
) -> FastAPI:
    """The app; `lifecycle` (made by the server) learns its registry and start-up error.

    With `engine` (an HTTP worker's), the models run in the engine process listening
    on that socket; without it, in this process.
    """
    metrics = Metrics(max_batch_size=settings.largest_pass)
    arrivals = Arrivals()  # shared by every batcher: requests on their way to any queue
    app = FastAPI(
        title="cnn-serve",
        version=__version__,
        description="Serves PyTorch CNN image classifiers: dynamic batching on CPU or GPU, "
        "top-k classification, and feature maps of every convolution layer.",
        lifespan=_lifespan(settings, metrics, arrivals, lifecycle or Lifecycle(), engine),
        docs_url=None,  # served from the package instead of a CDN: service/api/docs.py
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_openapi(app, key_required=settings.api_key is not None)
    app.include_router(docs_router(app.title, app.openapi_url or "/openapi.json"))
    for router in (health, model_info, classify, feature_maps, explain, v2, repository):
        app.include_router(router.router)
    if settings.ui:
        app.include_router(ui.router)
    if settings.metrics_port is None:  # else only on its own port, private to the cluster
        add_metrics_route(app, metrics)
    _install_middleware(app, settings, metrics, arrivals)
    return app
