from __future__ import annotations

from pathlib import Path

import torch

import models
from models import build_model
from models.pack import main as pack


def test_pack_user_weights_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    trained = build_model("resnet18", num_classes=3, in_channels=3).eval()
    torch.save(trained.state_dict(), tmp_path / "mine.pth")
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    code = pack(
        [
            "--arch", "resnet18", "--weights", str(tmp_path / "mine.pth"),
            "--labels", str(tmp_path / "labels.txt"), "--input", "3x64x64",
            "--resize-size", "72", "--name", "pets", "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 0
    loaded = models.load(tmp_path / "out")
    assert loaded.card.labels == ("cat", "dog", "bird")
    assert loaded.card.input.resize == "resize_center_crop" and loaded.card.input.resize_size == 72
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(x), trained(x))


def test_pack_refuses_weights_of_another_architecture(tmp_path: Path) -> None:
    torch.save(
        build_model("mnist_cnn", num_classes=10, in_channels=1).state_dict(), tmp_path / "w.pth"
    )
    code = pack(
        ["--arch", "resnet18", "--weights", str(tmp_path / "w.pth"), "--num-classes", "10",
         "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_pack_random_init(tmp_path: Path) -> None:
    code = pack(
        [
            "--arch",
            "mobilenet_v3_small",
            "--random-init",
            "--num-classes",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert models.load(tmp_path).card.num_classes == 5


def test_pack_records_the_gpu_precision_a_model_asks_for(tmp_path: Path) -> None:
    common = ["--arch", "mnist_cnn", "--random-init", "--num-classes", "10", "--input", "1x28x28"]
    assert pack([*common, "--gpu-precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    card = models.load(tmp_path / "bf16").card
    assert (card.gpu_precision, card.card_format) == ("bf16", 3)
    # Without it the card stays in the format older servers read.
    assert pack([*common, "--out", str(tmp_path / "plain")]) == 0
    card = models.load(tmp_path / "plain").card
    assert (card.gpu_precision, card.card_format) == (None, 2)
