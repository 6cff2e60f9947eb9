"""cnn-train on a user's ImageFolder directory, end to end through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import models
from models.data import DEFAULT_SEED, stratified_indices
from models.pack import main as pack
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


TRAIN = str(Path(sys.executable).with_name("cnn-train"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRAIN, *args], capture_output=True, text=True, timeout=300, check=False)


def _held_out_accuracy(card: Path, data: Path) -> float:
    """What --eval-only must print, computed here: the held-out split, image by image."""
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(data))
    targets = np.asarray(folder.targets, dtype=np.int64)
    _, test = stratified_indices(targets, seed=DEFAULT_SEED)
    loaded = models.load(card)
    hits = 0
    with torch.inference_mode():
        for i in test:
            image, target = folder[int(i)]
            logits = loaded.module(loaded.preprocess(image).unsqueeze(0))
            hits += int(loaded.card.labels[int(logits.argmax())] == folder.classes[target])
    return hits / len(test)


def test_eval_only_evaluates_any_card_on_its_image_folder(tmp_path: Path) -> None:
    _image_folder(tmp_path / "data")
    trained = _cli(
        "--data", str(tmp_path / "data"), "--arch", "mnist_cnn", "--input", "3x28x28",
        "--epochs", "2", "--batch-size", "8", "--out", str(tmp_path / "out"), "--name", "shades",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    card = tmp_path / "out" / "shades.json"
    result = _cli("--eval-only", str(card), "--data", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    expected = _held_out_accuracy(card, tmp_path / "data")
    first = result.stdout.splitlines()[0]
    assert first == f"shades: accuracy {expected:.4f} on 4 held-out images of {tmp_path / 'data'}"

    other = tmp_path / "other"
    _image_folder(other)
    (other / "light").rename(other / "medium")
    refused = _cli("--eval-only", str(card), "--data", str(other))
    assert refused.returncode != 0
    assert "classes the card does not know: ['medium']" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_eval_only_without_data_refuses_a_card_that_is_not_mnist(tmp_path: Path) -> None:
    assert pack(["--arch", "mnist_cnn", "--random-init", "--num-classes", "3",
                 "--input", "1x28x28", "--name", "three", "--out", str(tmp_path)]) == 0  # fmt: skip
    result = _cli("--eval-only", str(tmp_path / "three.json"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "three is not an MNIST digit model" in lines[0]
    assert "pass --data DIR" in lines[0]
