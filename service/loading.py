"""Start-up: turn the configured checkpoints into warmed-up, batching served models."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

import models
from models.complexity import multiply_adds
from models.feature_layer import FeatureLayer
from models.layers import feature_layers
from service.arrivals import Arrivals
from service.batch_run import BatchObserver
from service.batch_sizes import warm_up_sizes
from service.batching import Batcher
from service.cpus import available_cpus, default_instances
from service.devices import DevicePlan, plan_for
from service.engine import Engine
from service.explain_lane import ExplainLane
from service.local_backend import LocalBackend
from service.metrics import Metrics
from service.monitoring import ActivationMonitor
from service.registry import BatchingInfo, ModelFacts, ModelRegistry, ServedModel
from service.settings import ModelSpec, Settings, configured_models

log = logging.getLogger("service.loading")


def _engines(
    loaded: models.LoadedModel, settings: Settings, layers: Sequence[FeatureLayer]
) -> tuple[DevicePlan, list[Engine]]:
    """The device plan and one warmed-up engine per instance."""
    work = multiply_adds(loaded.module, loaded.card.input.shape)
    plan = plan_for(settings.device, settings.precision, multiply_adds=work)
    count = settings.instances or default_instances(plan.device.type, available_cpus())
    engines = [Engine(loaded, plan, layers) for _ in range(count)]
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for engine in engines:
        engine.warm_up(warm_up_sizes(settings.max_batch_size))
    return plan, engines


def load_served_model(
    spec: ModelSpec,
    settings: Settings,
    observer: BatchObserver | None = None,
    arrivals: Arrivals | None = None,
) -> LocalModel:
    """Load, check, place and warm up one model; raises ModelLoadError or DeviceUnavailable."""
    started = time.monotonic()
    loaded = models.load(spec.path)
    layers = feature_layers(loaded.module, loaded.card.input.shape)
    plan, engines = _engines(loaded, settings, layers)
    card = loaded.card
    monitor = ActivationMonitor(
        layers,
        card.num_classes,
        card.activation_profile,
        sample_rate=settings.activation_sample_rate,
        window_images=settings.activation_window_images,
    )
    batcher = Batcher(
        spec.name,
        engines,
        max_batch_size=settings.max_batch_size,
        max_delay_s=settings.max_batch_delay_s,
        max_queue_images=settings.max_queue_size,
        observer=observer,
        arrivals=arrivals,
        sampler=monitor,
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
            "warm_up_batches": warm_up_sizes(settings.max_batch_size),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    facts = _facts(spec.name, loaded, layers, plan, settings)
    return LocalModel(facts, LocalBackend(loaded, tuple(layers), batcher, lane, monitor))


def _facts(
    name: str,
    loaded: models.LoadedModel,
    layers: Sequence[FeatureLayer],
    plan: DevicePlan,
    settings: Settings,
) -> ModelFacts:
    return ModelFacts(
        name=name,
        card=loaded.card,
        layers=tuple(layers),
        device=str(plan.device),
        dtype_name=plan.dtype_name,
        parameters=loaded.parameter_count,
        batching=BatchingInfo(
            settings.max_batch_size, settings.max_batch_delay_s, settings.max_queue_size
        ),
    )


@dataclass
class LocalModel:
    """A model loaded here: what every process may know of it, and its torch side."""

    facts: ModelFacts
    backend: LocalBackend


class LocalModels:
    """The model source of a process that holds its models: loads, warms, starts and stops them."""

    def __init__(self, settings: Settings, arrivals: Arrivals) -> None:
        torch.set_num_threads(settings.torch_threads)
        self._settings = settings
        self._arrivals = arrivals
        self.loaded: list[LocalModel] = []

    async def open(self, registry: ModelRegistry, metrics: Metrics) -> None:
        for spec in configured_models(self._settings):
            observer = metrics.observer(spec.name)
            model = await asyncio.to_thread(
                load_served_model, spec, self._settings, observer, self._arrivals
            )
            served = ServedModel(model.facts, model.backend)
            metrics.model_loaded(served)
            metrics.watch_activations(spec.name, model.backend.monitor)
            metrics.watch_queue(spec.name, model.backend.batcher)
            if model.facts.device.startswith("cuda"):
                metrics.watch_gpu(model.facts.device)
            registry.add(served)
            self.loaded.append(model)
            model.backend.start()

    async def close(self, grace_s: float) -> None:
        for model in self.loaded:
            if not await model.backend.stop(grace_s):
                log.warning(
                    "batcher did not drain within the grace period",
                    extra={"model": model.facts.name},
                )
