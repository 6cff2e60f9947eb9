"""The engine's version lookup while a version is retired.

The engine process answers its HTTP workers' requests on its connection threads, which
look the named version up (LocalModels.find) while the event loop retires it. A worker
names the versions it was told of, and is told of a retirement only when the engine's
catalog reaches it, so the version has to stay findable through every step of the
retirement: on_change (which sends the catalog) runs in the middle of those steps.
"""

from __future__ import annotations

from service.arrivals import Arrivals
from service.loading import LocalModel, LocalModels
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings


async def test_a_retiring_version_is_found_by_name_and_version_at_every_step() -> None:
    settings = Settings(torch_threads=1, preprocess_workers=1, request_timeout_s=60.0)
    models = LocalModels(settings, Arrivals())
    await models.open(ModelRegistry(), Metrics(max_batch_size=settings.largest_pass))
    try:
        ((name, version),) = models.loaded
        serving = models.loaded[(name, version)]
        seen: list[tuple[LocalModel | None, LocalModel | None]] = []
        models.on_change = lambda: seen.append(
            (models.find(name, version), models.find(name, None))
        )

        stopping = models.retire_version(name, version)

        # While the workers are told: still found by version, no longer the served newest.
        assert seen == [(serving, None)]
        assert models.find(name, version) is serving
        assert (name, version) not in models.loaded
        assert not stopping.done()  # stopped a request timeout later
        stopping.cancel()
    finally:
        await models.close(0.0)
