"""Fixtures of the reliability suite: the real app with its state in reach, and the probe model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Receive, Scope, Send

from service.app import create_app
from service.settings import Settings
from service.state import AppState
from tests.reliability.probe import ProbeNet, probe_checkpoint


class _StateTap:
    """Pass-through ASGI app that keeps the app state the lifespan put in each request's scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: AppState | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.state = scope["state"]["app_state"]
        await self.app(scope, receive, send)


@dataclass
class Served:
    client: httpx.AsyncClient
    state: AppState


ServedFactory = Callable[..., AbstractAsyncContextManager[Served]]


@asynccontextmanager
async def _served(*, raise_app_exceptions: bool = True, **overrides: Any) -> AsyncIterator[Served]:
    settings = Settings(**{"torch_threads": 1, "preprocess_workers": 2, **overrides})
    app = create_app(settings)
    tap = _StateTap(app)
    async with LifespanManager(tap, startup_timeout=120, shutdown_timeout=60) as manager:
        # A server logs what an app raises after its 500; raise_app_exceptions=False sees the 500.
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/healthz")
            assert tap.state is not None
            # Start-up ran the model on random inputs (tracing, its check, warm-up), whose
            # grey levels can equal a test's: only the passes of the test's requests count.
            ProbeNet.calls.clear()
            yield Served(client, tap.state)


@pytest.fixture
def served_app() -> ServedFactory:
    """Factory: `async with served_app(**settings) as s:` the real app, `s.client` and `s.state`."""
    return _served


@pytest.fixture
def probe_card(tmp_path: Path) -> Iterator[Path]:
    """A checkpoint of the probe model (see probe.py), registered for this test only."""
    with probe_checkpoint(tmp_path) as card:
        yield card
