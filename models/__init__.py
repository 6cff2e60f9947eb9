"""Model package: architectures, checkpoints with cards, preprocessing, training.

The public Python API is `models.load(path)`, the same call the service makes.
"""

from models.architectures import ARCHITECTURES, build_model
from models.card import InputSpec, ModelCard
from models.checkpoint import LoadedModel, load, save_checkpoint
from models.errors import CardError, IntegrityError, ModelLoadError, UnknownArchitectureError
from models.preprocess import Preprocessor
from models.weights import DEFAULT_MODEL_NAME, default_model_path

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
