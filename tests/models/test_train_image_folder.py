"""cnn-train on a user's ImageFolder directory, end to end through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import models
from models.train import main as train_main


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 215)):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal(level, 20, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def test_train_on_an_image_folder_writes_a_servable_checkpoint(tmp_path: Path) -> None:
    _image_folder(tmp_path / "data")
    code = train_main(
        ["--data", str(tmp_path / "data"), "--arch", "mnist_cnn", "--input", "3x28x28",
         "--epochs", "3", "--batch-size", "8", "--out", str(tmp_path / "out"), "--name", "shades"]
    )  # fmt: skip
    assert code == 0
    loaded = models.load(tmp_path / "out" / "shades.json")
    assert loaded.card.labels == ("dark", "light")
    assert loaded.card.input.shape == (3, 28, 28)
    assert loaded.card.training is not None
    assert loaded.card.training.split == "stratified 16 train / 4 test"
    assert loaded.card.metrics is not None
    assert 0.0 <= loaded.card.metrics.accuracy <= 1.0
    profile = loaded.card.activation_profile  # over the 16 training images, not augmented
    assert profile is not None and profile.images == 16
    assert list(profile.layers) == ["relu1", "relu2", "relu3", "relu4", "relu5"]
