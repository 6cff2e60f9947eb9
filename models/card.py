"""The model card: the JSON document that travels beside a weights file.

A card says everything needed to rebuild, verify and feed a model: which
architecture with which arguments, what the input must look like, what the
labels mean, how it was trained and how well it did. Preprocessing is derived
from the card's input spec, so serving sees images exactly as training did.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.activation_profile import ActivationProfile
from models.errors import CardError
from models.validation import summarize_errors

CARD_SUFFIX = ".json"
# The card's own format. 1: the first; 2: adds activation_profile; 3: adds gpu_precision.
# Cards without the field are format 1 and load as they are; a card from a newer format is
# refused. A card is written in the oldest format that holds what it says (`format_needed`).
CARD_FORMAT = 3
WeightsFormat = Literal["state_dict", "torchscript", "export"]
GpuPrecision = Literal["fp16", "bf16"]
ResizePolicy = Literal["resize", "resize_center_crop"]


# Control characters and line breaks: a label travels in HTTP headers and log lines, where a
# CR or LF ends the line early (the server then drops the connection rather than answer).
_UNPRINTABLE = {"Cc", "Zl", "Zp"}


def label_problem(label: str) -> str | None:
    """Why `label` cannot be a class label, or None when it can."""
    if not label.strip():
        return "a label is empty"
    for char in label:
        if unicodedata.category(char) in _UNPRINTABLE:
            return f"label {label!r} contains the control character U+{ord(char):04X}"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What the network expects: a [channels, height, width] float tensor."""

    channels: Literal[1, 3] = Field(description="1 for grey-scale, 3 for RGB")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    resize: ResizePolicy = Field(
        default="resize",
        description="'resize': scale straight to height x width; "
        "'resize_center_crop': scale the short side to resize_size, then crop the centre",
    )
    resize_size: int | None = Field(default=None, gt=0)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    invert: bool = Field(
        default=False,
        description="invert grey levels (dark-on-light drawings for a light-on-dark model)",
    )

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if self.resize == "resize_center_crop" and self.resize_size is None:
            raise ValueError("resize_center_crop needs resize_size")
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


class Architecture(_Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Training(_Strict):
    data: str
    split: str
    seed: int
    epochs: int | None = None
    notes: str | None = None


class Metrics(_Strict):
    accuracy: float = Field(ge=0.0, le=1.0)
    per_class_accuracy: dict[str, float] = Field(default_factory=dict)
    evaluated_on: str | None = None


class ModelCard(_Strict):
    card_format: int = Field(
        default=1,
        ge=1,
        le=CARD_FORMAT,
        description=f"the card's format version; this version reads up to {CARD_FORMAT}",
    )
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: str = "1"
    architecture: Architecture
    labels: tuple[str, ...] = Field(min_length=1)
    input: InputSpec
    weights_file: str
    weights_format: WeightsFormat = "state_dict"
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    training: Training | None = None
    metrics: Metrics | None = None
    torch_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    activation_profile: ActivationProfile | None = Field(
        default=None,
        description="activation statistics over reference images, for drift monitoring (format 2)",
    )
    gpu_precision: GpuPrecision | None = Field(
        default=None,
        description="the reduced precision it runs in on a GPU when the server's precision is "
        "auto (format 3); unset: fp16. bf16 for a model whose activations overflow fp16",
    )

    @field_validator("labels")
    @classmethod
    def _printable_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for label in value:
            problem = label_problem(label)
            if problem is not None:
                raise ValueError(problem)
        return value

    @property
    def format_needed(self) -> int:
        """The oldest card format that holds this card's fields (2: the format before
        gpu_precision, which every card written since the activation profile has)."""
        return 3 if self.gpu_precision is not None else 2

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def dump(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CardError(f"model card not found: {path}") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CardError(f"model card {path} is not readable JSON: {exc}") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = summarize_errors(exc.errors())
            raise CardError(f"model card {path} is invalid: {problems}") from exc
