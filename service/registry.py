"""The served models as the HTTP side sees them: card, layers, placement and a backend.

Nothing here holds torch: the model itself is behind `backend` (in this process,
or in the engine process; see service.backend).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from models.card import ModelCard
from models.feature_layer import FeatureLayer
from models.pixels import PixelPipeline
from service.backend import ModelBackend
from service.errors import UnknownModel


@dataclass(frozen=True)
class BatchingInfo:
    max_batch_size: int
    max_request_pass: int
    max_delay_s: float
    max_queue_images: int


@dataclass(frozen=True)
class ModelFacts:
    """What a loaded model is, in plain data: made where it loads, sent to HTTP workers."""

    name: str
    version: str  # the repository's version folder, else the card's version
    card: ModelCard
    layers: tuple[FeatureLayer, ...]  # feature-map layers in forward order, found at load
    device: str
    dtype_name: str
    parameters: int
    batching: BatchingInfo
    decodes_jpeg: bool = False  # the engine decodes baseline JPEGs on its device

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "card": self.card.model_dump(mode="json"),
            "layers": [layer.to_wire() for layer in self.layers],
            "device": self.device,
            "dtype_name": self.dtype_name,
            "parameters": self.parameters,
            "batching": asdict(self.batching),
            "decodes_jpeg": self.decodes_jpeg,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ModelFacts:
        return cls(
            name=data["name"],
            version=data["version"],
            card=ModelCard.model_validate(data["card"]),
            layers=tuple(FeatureLayer.from_wire(layer) for layer in data["layers"]),
            device=data["device"],
            dtype_name=data["dtype_name"],
            parameters=data["parameters"],
            batching=BatchingInfo(**data["batching"]),
            decodes_jpeg=data["decodes_jpeg"],
        )


@dataclass
class ServedModel:
    facts: ModelFacts
    backend: ModelBackend
    pixels: PixelPipeline = field(init=False)  # decoded image -> the card's uint8 pixels

    def __post_init__(self) -> None:
        self.pixels = PixelPipeline(self.facts.card.input)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def version(self) -> str:
        return self.facts.version

    @property
    def card(self) -> ModelCard:
        return self.facts.card

    @property
    def layers(self) -> tuple[FeatureLayer, ...]:
        return self.facts.layers

    def metadata(self) -> dict[str, Any]:
        facts, card = self.facts, self.facts.card
        return {
            "name": facts.name,
            "version": facts.version,
            "architecture": card.architecture.name,
            "labels": list(card.labels),
            "input": card.input.model_dump(mode="json"),
            "parameters": facts.parameters,
            "device": facts.device,
            "dtype": facts.dtype_name,
            "jpeg_decode": "device" if facts.decodes_jpeg else "host",
            "batching": {
                "max_batch_size": facts.batching.max_batch_size,
                "max_request_pass": facts.batching.max_request_pass,
                "max_batch_delay_ms": facts.batching.max_delay_s * 1000.0,
                "max_queue_size": facts.batching.max_queue_images,
            },
            "metrics": card.metrics.model_dump(mode="json") if card.metrics else None,
            "weights_sha256": card.weights_sha256,
        }


def version_order(version: str) -> tuple[int, int | str]:
    """Numbers in numeric order ("10" after "2"), before any other version text."""
    return (0, int(version)) if version.isdecimal() else (1, version)


@dataclass
class ModelRegistry:
    """The served models and their versions. Requests that name no version get the newest.

    Changed only on the event loop, one assignment at a time: a request sees a version
    either served or not, and a new version replaces the old for every request after it.
    """

    versions: dict[str, dict[str, ServedModel]] = field(default_factory=dict)
    default_name: str | None = None
    ready: bool = False
    draining: bool = False
    _newest: dict[str, ServedModel] = field(default_factory=dict)

    @property
    def models(self) -> dict[str, ServedModel]:
        """Each served model's newest version, by name."""
        return self._newest

    def add(self, served: ServedModel) -> None:
        self.versions.setdefault(served.name, {})[served.version] = served
        self._update(served.name)
        if self.default_name is None:
            self.default_name = served.name

    def remove(self, name: str, version: str) -> ServedModel | None:
        served = self.versions.get(name, {}).pop(version, None)
        self._update(name)
        return served

    def _update(self, name: str) -> None:
        versions = self.versions.get(name)
        if not versions:
            self.versions.pop(name, None)
            self._newest.pop(name, None)
            return
        self._newest = {**self._newest, name: versions[max(versions, key=version_order)]}

    def served(self) -> list[ServedModel]:
        """Every served version, by name, then version."""
        return [
            versions[v]
            for _, versions in sorted(self.versions.items())
            for v in sorted(versions, key=version_order)
        ]

    def get(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model by name (default: the default model): `version`, else the newest."""
        key = name if name is not None else self.default_name
        if key is None or key not in self._newest:
            known = ", ".join(sorted(self._newest)) or "none"
            raise UnknownModel(f"no model named {key!r} is served; served models: {known}")
        if version is None:
            return self._newest[key]
        served = self.versions[key].get(version)
        if served is None:
            known = ", ".join(sorted(self.versions[key], key=version_order))
            raise UnknownModel(
                f"model {key!r} has no version {version!r} served; served versions: {known}"
            )
        return served

    @property
    def serving(self) -> bool:
        return self.ready and not self.draining
