"""Start-up: turn the configured checkpoints into warmed-up, batching served models."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import models
from models.complexity import multiply_adds
from models.feature_layer import FeatureLayer
from models.layers import feature_layers
from service.allocator import release_freed_memory
from service.arrivals import Arrivals
from service.batch_run import BatchObserver
from service.batch_sizes import warm_up_sizes
from service.batching import Batcher
from service.cpus import (
    available_cpus,
    default_helpers,
    default_instances,
    default_request_pass,
)
from service.devices import DevicePlan, plan_for
from service.engine import Engine
from service.explain_lane import ExplainLane
from service.local_backend import LocalBackend
from service.metrics import Metrics
from service.model_repository import RepositoryManager
from service.monitoring import ActivationMonitor
from service.registry import BatchingInfo, ModelFacts, ModelRegistry, ServedModel
from service.settings import ModelSpec, Settings, configured_models

log = logging.getLogger("service.loading")


def _engines(
    loaded: models.LoadedModel,
    settings: Settings,
    layers: Sequence[FeatureLayer],
    monitor: ActivationMonitor,
) -> tuple[DevicePlan, list[Engine], list[Engine], int]:
    """The device plan, one warmed-up engine per instance, then per helper, and the most
    images of one request a forward pass holds."""
    work = multiply_adds(loaded.module, loaded.card.input.shape)
    plan = plan_for(
        settings.device,
        settings.precision,
        multiply_adds=work,
        cuda_graphs=settings.cuda_graphs,
        device_decode=settings.device_decode,
        card_gpu_precision=loaded.card.gpu_precision,
    )
    cpus = available_cpus()
    count = settings.instances or default_instances(plan.device.type, cpus, work)
    helpers = 0 if settings.instances else default_helpers(
        plan.device.type, cpus, count, settings.torch_threads
    )  # fmt: skip
    monitored = monitor.layers if monitor.sample_rate > 0 else []
    engines = [Engine(loaded, plan, layers, monitored) for _ in range(count + helpers)]
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    request_pass = settings.max_request_pass or default_request_pass(
        plan.device.type, work, settings.max_batch_size
    )
    for engine in engines:
        engine.warm_up(_pass_sizes(request_pass, settings))
    return plan, engines[:count], engines[count:], request_pass


def _pass_sizes(request_pass: int, settings: Settings) -> list[int]:
    """The batch sizes warmed up: up to the largest pass, gathered or one request's."""
    return warm_up_sizes(max(request_pass, settings.max_batch_size))


def load_served_model(
    spec: ModelSpec,
    settings: Settings,
    observer: BatchObserver | None = None,
    arrivals: Arrivals | None = None,
    version: str | None = None,
) -> LocalModel:
    """Load, check, place and warm up one model; raises ModelLoadError or DeviceUnavailable.

    `version`: the repository's name for it; else the card's version."""
    started = time.monotonic()
    loaded = models.load(spec.path)
    layers = feature_layers(loaded.module, loaded.card.input.shape)
    card = loaded.card
    monitor = ActivationMonitor(
        layers,
        card.num_classes,
        card.activation_profile,
        sample_rate=settings.activation_sample_rate,
        window_images=settings.activation_window_images,
    )
    plan, engines, helpers, request_pass = _engines(loaded, settings, layers, monitor)
    batcher = Batcher(
        spec.name,
        engines,
        max_batch_size=settings.max_batch_size,
        max_request_pass=request_pass,
        max_delay_s=settings.max_batch_delay_s,
        max_queue_images=settings.max_queue_size,
        observer=observer,
        arrivals=arrivals,
        sampler=monitor,
        helpers=helpers,
    )
    lane = ExplainLane(
        spec.name, loaded.module, plan.device, classification=batcher,
        max_queue=settings.explain_queue_size,
    )  # fmt: skip
    log.info(
        "model ready",
        extra={
            "model": spec.name,
            "path": str(loaded.path),
            "device": str(plan.device),
            "dtype": plan.dtype_name,
            "instances": len(engines),
            "helpers": len(helpers),
            "warm_up_batches": _pass_sizes(request_pass, settings),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    batching = BatchingInfo(
        settings.max_batch_size,
        request_pass,
        settings.max_batch_delay_s,
        settings.max_queue_size,
    )
    facts = _facts(spec.name, version or card.version, loaded, layers, plan, batching)
    return LocalModel(facts, LocalBackend(loaded, tuple(layers), batcher, lane, monitor))


def _facts(
    name: str,
    version: str,
    loaded: models.LoadedModel,
    layers: Sequence[FeatureLayer],
    plan: DevicePlan,
    batching: BatchingInfo,
) -> ModelFacts:
    return ModelFacts(
        name=name,
        version=version,
        card=loaded.card,
        layers=tuple(layers),
        device=str(plan.device),
        dtype_name=plan.dtype_name,
        parameters=loaded.parameter_count,
        decodes_jpeg=plan.decodes_jpeg,
        batching=batching,
    )


@dataclass
class LocalModel:
    """A model loaded here: what every process may know of it, and its torch side."""

    facts: ModelFacts
    backend: LocalBackend


class LocalModels:
    """The model source of a process that holds its models: loads, warms, starts and stops them.

    From CNN_MODELS, once; or from a repository (service.model_repository), whose versions
    come and go while the service runs. A version taken out of the registry is stopped
    CNN_REQUEST_TIMEOUT_S later: every request that could still reach it, in this process
    or an HTTP worker's, has its answer or its 504 by then.
    """

    def __init__(self, settings: Settings, arrivals: Arrivals) -> None:
        torch.set_num_threads(settings.torch_threads)
        self._settings = settings
        self._arrivals = arrivals
        self._registry = ModelRegistry()
        self._metrics: Metrics | None = None
        self.loaded: dict[tuple[str, str], LocalModel] = {}  # the served versions
        self._retiring: dict[asyncio.Task[None], LocalModel] = {}
        self.repository: RepositoryManager | None = None
        self.on_change: Callable[[], None] = lambda: None  # the engine tells its workers

    async def open(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self._registry, self._metrics = registry, metrics
        metrics.watch_models(registry.served, self._states)
        root = self._settings.model_repository
        if root is None:
            for spec in configured_models(self._settings):
                started = time.monotonic()
                await self.add_version(spec.name, spec.path, None)
                metrics.model_load(spec.name, ok=True, seconds=time.monotonic() - started)
            return
        self.repository = RepositoryManager(root, self._settings.model_control, self, metrics)
        await self.repository.open(self._settings.repository_poll_s)

    def repository_control(self) -> RepositoryManager | None:
        return self.repository

    def _states(self) -> dict[tuple[str, str], str]:
        if self.repository is not None:
            return {key: state.value for key, state in self.repository.states().items()}
        return {key: "READY" for key in self.loaded}

    def find(self, name: str, version: str | None) -> LocalModel | None:
        """A served version (the newest without `version`), or one still finishing its work.

        The engine's connection threads call it while the event loop changes the versions:
        a version is retiring before it leaves `loaded` (retire_version), and the retiring
        ones are read from a copy, so a request that named a version it was told of always
        finds it."""
        if version is None:
            served = self._registry.models.get(name)
            if served is None:
                return None
            version = served.version
        found = self.loaded.get((name, version))
        if found is None:
            for model in list(self._retiring.values()):
                if (model.facts.name, model.facts.version) == (name, version):
                    return model
        return found

    def catalog(self) -> dict[str, Any]:
        """What the HTTP workers' registries hold: every served version, and the default."""
        return {
            "models": [
                self.loaded[(s.name, s.version)].facts.to_wire() for s in self._registry.served()
            ],
            "default": self._settings.default_model or self._registry.default_name,
        }

    # ---- service.model_repository.ModelHost ------------------------------

    def served_versions(self, name: str) -> set[str]:
        return set(self._registry.versions.get(name, {}))

    async def add_version(self, name: str, card: Path, version: str | None) -> None:
        metrics = self._metrics
        assert metrics is not None  # opened
        model = await asyncio.to_thread(
            load_served_model,
            ModelSpec(name=name, path=card),
            self._settings,
            metrics.observer(name),
            self._arrivals,
            version,
        )
        served = ServedModel(model.facts, model.backend)
        model.backend.start()
        metrics.model_loaded(served)
        if model.facts.device.startswith("cuda"):
            metrics.watch_gpu(model.facts.device)
        self.loaded[(name, served.version)] = model
        self._registry.add(served)  # from here on, requests without a version may get it
        self._watch(name)
        self.on_change()

    def retire_version(self, name: str, version: str) -> asyncio.Future[None]:
        model = self.loaded[(name, version)]
        task = asyncio.create_task(self._stop_later(model, self._settings.request_timeout_s))
        self._retiring[task] = model  # first: find() sees it in one place or the other
        self._registry.remove(name, version)
        del self.loaded[(name, version)]
        self._watch(name)
        self.on_change()
        return task

    def _watch(self, name: str) -> None:
        """The model's live gauges follow its newest served version."""
        metrics = self._metrics
        assert metrics is not None
        newest = self._registry.models.get(name)
        if newest is None:
            metrics.unwatch(name)
            return
        backend = self.loaded[(name, newest.version)].backend
        metrics.watch_activations(name, backend.monitor)
        metrics.watch_queue(name, backend.batcher)

    async def _stop_later(self, model: LocalModel, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._stop(model, self._settings.shutdown_grace_s)
        # The last references go before the collection, so that it frees the weights and
        # the warmed buffers, and these go back to the system, not to the heap.
        self._retiring.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        del model
        await asyncio.to_thread(_return_memory)

    async def close(self, grace_s: float) -> None:
        if self.repository is not None:
            await self.repository.close()
        for task in list(self._retiring):
            task.cancel()
        retiring = list(self._retiring.values())
        for model in [*self.loaded.values(), *retiring]:
            await self._stop(model, grace_s)

    @staticmethod
    async def _stop(model: LocalModel, grace_s: float) -> None:
        if not await model.backend.stop(grace_s):
            log.warning(
                "batcher did not drain within the grace period",
                extra={"model": model.facts.name, "version": model.facts.version},
            )


def _return_memory() -> None:
    gc.collect()
    release_freed_memory()
