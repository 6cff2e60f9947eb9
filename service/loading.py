"""Start-up: turn the configured checkpoints into warmed-up, batching served models."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

import models
from models.complexity import multiply_adds
from models.layers import FeatureLayer, feature_layers
from service.arrivals import Arrivals
from service.batch_run import BatchObserver
from service.batching import Batcher, warm_up_sizes
from service.devices import DevicePlan, plan_for
from service.engine import Engine
from service.explain_lane import ExplainLane
from service.monitoring import ActivationMonitor
from service.registry import ServedModel
from service.settings import ModelSpec, Settings

log = logging.getLogger("service.loading")


def configured_models(settings: Settings) -> list[ModelSpec]:
    if settings.models:
        return list(settings.models)
    return [ModelSpec(name=models.DEFAULT_MODEL_NAME, path=models.default_model_path())]


def _engines(
    loaded: models.LoadedModel, settings: Settings, layers: Sequence[FeatureLayer]
) -> tuple[DevicePlan, list[Engine]]:
    """The device plan and one warmed-up engine per instance."""
    work = multiply_adds(loaded.module, loaded.card.input.shape)
    plan = plan_for(settings.device, settings.precision, multiply_adds=work)
    engines = [Engine(loaded, plan, layers) for _ in range(settings.instances)]
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
) -> ServedModel:
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
            "instances": settings.instances,
            "warm_up_batches": warm_up_sizes(settings.max_batch_size),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    served = ServedModel(spec.name, loaded, plan, batcher, tuple(layers), lane, monitor)
    return served
