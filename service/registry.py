"""The served models: each one's checkpoint, device plan, engines and batcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models import LoadedModel, ModelCard
from models.layers import FeatureLayer
from service.batching import Batcher
from service.devices import DevicePlan
from service.errors import UnknownModel
from service.explain_lane import ExplainLane
from service.monitoring import ActivationMonitor


@dataclass
class ServedModel:
    name: str
    loaded: LoadedModel
    plan: DevicePlan
    batcher: Batcher
    layers: tuple[FeatureLayer, ...] = ()  # feature-map layers in forward order, found at load
    lane: ExplainLane | None = None  # explanations: their own thread and queue
    monitor: ActivationMonitor | None = None  # sampled activation statistics

    @property
    def card(self) -> ModelCard:
        return self.loaded.card

    def metadata(self) -> dict[str, Any]:
        card = self.card
        return {
            "name": self.name,
            "version": card.version,
            "architecture": card.architecture.name,
            "labels": list(card.labels),
            "input": card.input.model_dump(mode="json"),
            "parameters": self.loaded.parameter_count,
            "device": str(self.plan.device),
            "dtype": self.plan.dtype_name,
            "batching": {
                "max_batch_size": self.batcher.max_batch_size,
                "max_batch_delay_ms": self.batcher.max_delay_s * 1000.0,
                "max_queue_size": self.batcher.max_queue_images,
            },
            "metrics": card.metrics.model_dump(mode="json") if card.metrics else None,
            "weights_sha256": card.weights_sha256,
        }


@dataclass
class ModelRegistry:
    models: dict[str, ServedModel] = field(default_factory=dict)
    default_name: str | None = None
    ready: bool = False
    draining: bool = False

    def add(self, served: ServedModel) -> None:
        self.models[served.name] = served
        if self.default_name is None:
            self.default_name = served.name

    def get(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model by name (default: the default model), at `version` if given."""
        key = name if name is not None else self.default_name
        if key is None or key not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise UnknownModel(f"no model named {key!r} is served; served models: {known}")
        served = self.models[key]
        if version is not None and version != served.card.version:
            raise UnknownModel(
                f"model {key!r} has no version {version!r}; "
                f"the served version is {served.card.version!r}"
            )
        return served

    @property
    def serving(self) -> bool:
        return self.ready and not self.draining
