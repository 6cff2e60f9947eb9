"""The activation profile in the model card: old cards, round trips, cnn-pack and cnn-train."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models import CardError, InputSpec, build_model, save_checkpoint
from models.activation_profile import ActivationProfile
from models.card import CARD_FORMAT
from models.checkpoint import sha256_file
from models.pack import main as pack
from models.train import main as train_main
from tests.helpers import ROOT, Digits

SHIPPED = ROOT / "models" / "weights" / "mnist-cnn.json"


def shipped_copy(tmp_path: Path, **changes: object) -> Path:
    """The shipped card beside a copy of its weights, with top-level fields changed or removed."""
    shutil.copy(SHIPPED.with_suffix(".pt"), tmp_path / "mnist-cnn.pt")
    card = json.loads(SHIPPED.read_text())
    for key, value in changes.items():
        if value is None:
            card.pop(key, None)
        else:
            card[key] = value
    path = tmp_path / "mnist-cnn.json"
    path.write_text(json.dumps(card, indent=2))
    return path


def assert_profiles_close(got: ActivationProfile, want: ActivationProfile) -> None:
    assert got.images == want.images and list(got.layers) == list(want.layers)
    for name, layer in want.layers.items():
        mine = got.layers[name]
        for key in ("mean", "std", "zero_fraction", "never_fired_fraction"):
            assert getattr(mine, key) == pytest.approx(getattr(layer, key), rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(mine.bin_edges, layer.bin_edges, rtol=1e-4)
        np.testing.assert_allclose(mine.bin_fractions, layer.bin_fractions, atol=1e-3)
    np.testing.assert_allclose(got.class_fractions, want.class_fractions, atol=1e-3)


def test_the_shipped_card_carries_its_profile() -> None:
    card = models.load(SHIPPED).card
    assert card.card_format == 2
    profile = card.activation_profile
    assert profile is not None and profile.images == 4000
    assert list(profile.layers) == ["relu1", "relu2", "relu3", "relu4", "relu5"]
    assert card.weights_sha256 == sha256_file(SHIPPED.with_suffix(".pt"))


def test_a_card_without_the_profile_still_loads(tmp_path: Path) -> None:
    path = shipped_copy(tmp_path, card_format=None, activation_profile=None)
    card = models.load(path).card
    assert card.card_format == 1
    assert card.activation_profile is None
    assert card.labels == tuple(str(d) for d in range(10))


def test_a_card_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="card_format"):
        models.load(shipped_copy(tmp_path, card_format=CARD_FORMAT + 1))


def test_profile_only_rebuilds_the_shipped_profile_and_leaves_the_weights(tmp_path: Path) -> None:
    path = shipped_copy(tmp_path, card_format=None, activation_profile=None)
    before = sha256_file(tmp_path / "mnist-cnn.pt")
    assert train_main(["--profile-only", str(path)]) == 0
    card = models.load(path).card
    assert card.card_format == 2 and card.activation_profile is not None
    shipped = models.load(SHIPPED).card.activation_profile
    assert shipped is not None
    assert_profiles_close(card.activation_profile, shipped)
    assert sha256_file(tmp_path / "mnist-cnn.pt") == before == card.weights_sha256


def test_save_and_load_round_trip_the_profile(tmp_path: Path) -> None:
    profile = models.load(SHIPPED).card.activation_profile
    torch.manual_seed(0)
    module = build_model("mnist_cnn", num_classes=10, in_channels=1).eval()
    spec = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.25,))
    path = save_checkpoint(
        module,
        out_dir=tmp_path,
        name="with-profile",
        labels=tuple("0123456789"),
        input_spec=spec,
        architecture="mnist_cnn",
        activation_profile=profile,
    )
    card = models.load(path).card
    assert card.card_format == 2
    assert card.activation_profile == profile


@pytest.mark.parametrize("layout", ["flat", "image_folder"])
def test_pack_profiles_a_folder_of_images(tmp_path: Path, digits: Digits, layout: str) -> None:
    for i in range(40):
        folder = tmp_path / "data" / (str(digits.labels[i]) if layout == "image_folder" else "")
        folder.mkdir(parents=True, exist_ok=True)
        digits.images[i].save(folder / f"{i}.png")
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    code = pack(
        ["--arch", "mnist_cnn", "--random-init", "--num-classes", "10", "--input", "1x28x28",
         "--profile-data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0
    profile = models.load(tmp_path / "out").card.activation_profile
    assert profile is not None
    assert profile.images == 40
    assert profile.data == str(tmp_path / "data")
    assert list(profile.layers) == ["relu1", "relu2", "relu3", "relu4", "relu5"]


def test_pack_without_images_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no image files found"):
        pack(
            ["--arch", "mnist_cnn", "--random-init", "--num-classes", "10", "--input", "1x28x28",
             "--profile-data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]
        )  # fmt: skip
