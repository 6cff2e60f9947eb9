"""Checkpoints: a weights file plus its model card, saved and loaded as one.

`load(path)` is the public entry point used by training, evaluation, the
Python API and the service. It refuses to return a half-checked model: the
card must be valid, the weights must hash to the card's sha256, and a forward
pass on an input of the card's shape must give one score per label.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.activation_profile import ActivationProfile
from models.architectures import build_model
from models.card import (
    CARD_SUFFIX,
    Architecture,
    GpuPrecision,
    Metrics,
    ModelCard,
    Training,
    WeightsFormat,
)
from models.errors import CardError, IntegrityError, ModelLoadError
from models.preprocess import Preprocessor


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: module in eval mode, its card and its preprocessing."""

    module: nn.Module
    card: ModelCard
    path: Path
    preprocess: Preprocessor = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "preprocess", Preprocessor(self.card.input))

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path_for(path: Path) -> Path:
    """The card that describes `path`: the file itself, the .json beside it, or the one in a folder."""
    if path.is_dir():
        cards = sorted(path.glob(f"*{CARD_SUFFIX}"))
        if len(cards) != 1:
            raise CardError(
                f"expected exactly one model card (*.json) in {path}, found {len(cards)}"
            )
        return cards[0]
    if path.suffix == CARD_SUFFIX:
        return path
    return path.with_suffix(CARD_SUFFIX)


def save_checkpoint(
    module: nn.Module,
    *,
    out_dir: Path,
    name: str,
    labels: tuple[str, ...],
    input_spec: Any,
    architecture: str,
    architecture_kwargs: dict[str, Any] | None = None,
    version: str = "1",
    training: Training | None = None,
    metrics: Metrics | None = None,
    activation_profile: ActivationProfile | None = None,
    gpu_precision: GpuPrecision | None = None,
) -> Path:
    """Write `<name>.pt` (a state_dict) and `<name>.json` (its card); return the card's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, weights_path)
    card = ModelCard(
        card_format=3 if gpu_precision is not None else 2,  # ModelCard.format_needed
        name=name,
        version=version,
        architecture=Architecture(name=architecture, kwargs=architecture_kwargs or {}),
        labels=labels,
        input=input_spec,
        weights_file=weights_path.name,
        weights_format="state_dict",
        weights_sha256=sha256_file(weights_path),
        training=training,
        metrics=metrics,
        torch_version=torch.__version__.split("+")[0],
        created_at=datetime.now(UTC),
        activation_profile=activation_profile,
        gpu_precision=gpu_precision,
    )
    card_path = out_dir / f"{name}{CARD_SUFFIX}"
    card.dump(card_path)
    return card_path


def _read_weights(card: ModelCard, weights_path: Path, fmt: WeightsFormat) -> nn.Module:
    if fmt == "torchscript":
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream, but users still ship it: load it quietly.
            warnings.simplefilter("ignore", FutureWarning)
            scripted: nn.Module = torch.jit.load(str(weights_path), map_location="cpu")  # type: ignore[no-untyped-call]
        return scripted
    if fmt == "export":
        return torch.export.load(str(weights_path)).module()
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ModelLoadError(f"{weights_path} holds a {type(state).__name__}, not a state_dict")
    module = build_model(
        card.architecture.name,
        num_classes=card.num_classes,
        in_channels=card.input.channels,
        **card.architecture.kwargs,
    )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelLoadError(
            f"weights {weights_path} do not match architecture {card.architecture.name!r}: {first_line}"
        ) from exc
    return module


def _check_output_shape(module: nn.Module, card: ModelCard, weights_path: Path) -> None:
    with torch.inference_mode():
        out = module(torch.zeros((1, *card.input.shape)))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, card.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(
            f"{weights_path}: a {card.input.shape} input gives output {shape}, "
            f"but the card lists {card.num_classes} labels"
        )


def load(path: str | Path) -> LoadedModel:
    """Load a checkpoint from its weights file, its card, or the folder holding both."""
    card_path = card_path_for(Path(path))
    card = ModelCard.read(card_path)
    weights_path = card_path.parent / card.weights_file
    if not weights_path.is_file():
        raise ModelLoadError(f"weights file not found: {weights_path} (named by {card_path})")
    actual = sha256_file(weights_path)
    if actual != card.weights_sha256:
        raise IntegrityError(
            f"sha256 mismatch for {weights_path}: card {card_path} says "
            f"{card.weights_sha256[:12]}..., file is {actual[:12]}..."
        )
    try:
        module = _read_weights(card, weights_path, card.weights_format)
    except ModelLoadError:
        raise
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ModelLoadError(
            f"cannot read weights {weights_path}: {type(exc).__name__}: {exc}"
        ) from exc
    if (
        card.weights_format != "export"
    ):  # exported programs are frozen in the mode they were exported in
        module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    _check_output_shape(module, card, weights_path)
    return LoadedModel(module=module, card=card, path=card_path)
