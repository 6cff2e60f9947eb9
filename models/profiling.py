"""The activation profile of a model over reference images, and writing it into a card.

cnn-train profiles the digits it trained on (without augmentation: the images
as the service will see them), cnn-pack the folder given by --profile-data,
and `cnn-train --profile-only CARD` adds a profile to a card that lacks one
without touching its weights. See models/activation_stats.py for what is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from models.activation_profile import ActivationProfile
from models.activation_stats import default_profile_layers, profile_images
from models.card import ModelCard
from models.layers import feature_layers
from models.preprocess import Preprocessor

# A profile needs a few thousand images to settle its deciles; more only costs time.
MAX_PROFILE_IMAGES = 5000
_PROFILE_SEED = 0


def profile_model(
    module: nn.Module, preprocess: Preprocessor, images: Iterable[Image.Image], *, data: str
) -> ActivationProfile:
    """Profile the default layers (see default_profile_layers) over PIL images, one batch at a time."""
    layers = default_profile_layers(feature_layers(module, preprocess.spec.shape))
    return profile_images(module.eval(), (preprocess(image) for image in images), layers, data=data)


def folder_image_paths(root: Path, limit: int = MAX_PROFILE_IMAGES) -> list[Path]:
    """Every image file below `root` (an ImageFolder or a flat folder), a seeded sample over `limit`."""
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        raise ValueError(f"no image files found below {root}")
    if len(paths) > limit:
        keep = np.random.default_rng(_PROFILE_SEED).choice(len(paths), size=limit, replace=False)
        paths = [paths[i] for i in sorted(keep)]
    return paths


def open_images(paths: Iterable[Path]) -> Iterator[Image.Image]:
    for path in paths:
        with Image.open(path) as image:
            image.load()
            yield image


def write_profile(card_path: Path, profile: ActivationProfile) -> ModelCard:
    """Store `profile` in an existing card (its format raised to what it needs); the weights are
    untouched."""
    card = ModelCard.read(card_path)
    updated = card.model_copy(update={"activation_profile": profile})
    updated = updated.model_copy(update={"card_format": updated.format_needed})
    updated.dump(card_path)
    return updated
