"""Shared fixtures: the real app through its lifespan, and real MNIST digits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.settings import Settings
from tests.helpers import Digits, held_out_digits

AppClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def digits() -> Digits:
    return held_out_digits()


@asynccontextmanager
async def _app_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(**{"torch_threads": 1, "preprocess_workers": 2, **overrides})
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def app_client() -> AppClientFactory:
    """Factory: `async with app_client(max_batch_size=8) as client:` runs the real app."""
    return _app_client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The real app with default settings (serving the shipped mnist-cnn), through its lifespan."""
    async with _app_client() as c:
        yield c
