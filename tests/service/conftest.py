"""Fixtures shared by the service tests: a packed random-weight resnet18 and the app serving it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from models.pack import main as cnn_pack
from service.settings import ModelSpec
from tests.conftest import AppClientFactory


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resnet18")
    args = ["--arch", "resnet18", "--random-init", "--num-classes", "10", "--input", "3x224x224"]
    assert cnn_pack([*args, "--out", str(out)]) == 0
    return out


@pytest.fixture
async def resnet_client(
    app_client: AppClientFactory, resnet_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    spec = ModelSpec(name="resnet18", path=resnet_dir)
    async with app_client(models=[spec], max_batch_size=2, precision="fp32") as client:
        yield client
