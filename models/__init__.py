"""Model package: architectures, checkpoints with cards, preprocessing, training.

The public Python API is `models.load(path)`, the same call the service makes.
Its names are imported on first use (PEP 562): importing a torch-free part such
as `models.card` or `models.validation` must not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.architectures import ARCHITECTURES, build_model
    from models.card import InputSpec, ModelCard
    from models.checkpoint import LoadedModel, load, save_checkpoint
    from models.errors import CardError, IntegrityError, ModelLoadError, UnknownArchitectureError
    from models.preprocess import Preprocessor
    from models.weights import DEFAULT_MODEL_NAME, default_model_path

_HOMES = {
    "ARCHITECTURES": "models.architectures",
    "build_model": "models.architectures",
    "InputSpec": "models.card",
    "ModelCard": "models.card",
    "LoadedModel": "models.checkpoint",
    "load": "models.checkpoint",
    "save_checkpoint": "models.checkpoint",
    "CardError": "models.errors",
    "IntegrityError": "models.errors",
    "ModelLoadError": "models.errors",
    "UnknownArchitectureError": "models.errors",
    "Preprocessor": "models.preprocess",
    "DEFAULT_MODEL_NAME": "models.weights",
    "default_model_path": "models.weights",
}

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL_NAME",
    "CardError",
    "InputSpec",
    "IntegrityError",
    "LoadedModel",
    "ModelCard",
    "ModelLoadError",
    "Preprocessor",
    "UnknownArchitectureError",
    "build_model",
    "default_model_path",
    "load",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
