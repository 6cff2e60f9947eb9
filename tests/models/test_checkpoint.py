from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import models
from models import (
    CardError,
    InputSpec,
    IntegrityError,
    ModelLoadError,
    build_model,
    save_checkpoint,
)

SPEC = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.25,))
LABELS = tuple("abc")


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    module = build_model("mnist_cnn", num_classes=3, in_channels=1).eval()
    card_path = save_checkpoint(
        module,
        out_dir=tmp_path,
        name="tiny",
        labels=LABELS,
        input_spec=SPEC,
        architecture="mnist_cnn",
    )
    return card_path, module


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    card_path, module = _saved(tmp_path)
    loaded = models.load(card_path)
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), module(x))
    assert loaded.card.labels == LABELS
    assert not loaded.module.training
    # the same checkpoint loads from its weights file and from its folder
    assert models.load(tmp_path / "tiny.pt").card == loaded.card
    assert models.load(tmp_path).card == loaded.card


def test_sha256_mismatch_names_the_file(tmp_path: Path) -> None:
    card_path, _ = _saved(tmp_path)
    weights = tmp_path / "tiny.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="tiny.pt"):
        models.load(card_path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda card: card.pop("labels"), "labels"),
        (lambda card: card["input"].update(mean=[0.1, 0.2]), "mean and std"),
        (lambda card: card.update(weights_sha256="xyz"), "weights_sha256"),
    ],
)
def test_invalid_card_is_refused(tmp_path: Path, mutate: object, message: str) -> None:
    card_path, _ = _saved(tmp_path)
    card = json.loads(card_path.read_text())
    mutate(card)  # type: ignore[operator]
    card_path.write_text(json.dumps(card))
    with pytest.raises(CardError, match=message):
        models.load(card_path)


def test_missing_card_and_unreadable_json(tmp_path: Path) -> None:
    _saved(tmp_path)
    (tmp_path / "tiny.json").write_text("{not json")
    with pytest.raises(CardError, match="tiny.json"):
        models.load(tmp_path / "tiny.pt")
    (tmp_path / "tiny.json").unlink()
    with pytest.raises(CardError, match="not found"):
        models.load(tmp_path / "tiny.pt")


def test_card_that_does_not_match_the_weights(tmp_path: Path) -> None:
    card_path, _ = _saved(tmp_path)
    card = json.loads(card_path.read_text())
    card["labels"] = list("abcd")  # four labels, three outputs
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="do not match"):
        models.load(card_path)


def test_torchscript_and_export_archives_load(tmp_path: Path) -> None:
    card_path, module = _saved(tmp_path)
    card = json.loads(card_path.read_text())
    example = torch.randn(2, 1, 28, 28)
    with pytest.warns(FutureWarning, match="deprecated"):  # users still ship TorchScript
        scripted = torch.jit.trace(module, example[:1])
    scripted.save(str(tmp_path / "tiny-ts.pt"))
    exported = torch.export.export(module, (example[:1],))
    torch.export.save(exported, str(tmp_path / "tiny.pt2"))
    for fmt, file in (("torchscript", "tiny-ts.pt"), ("export", "tiny.pt2")):
        other = dict(card, weights_file=file, weights_format=fmt)
        other["weights_sha256"] = models.checkpoint.sha256_file(tmp_path / file)
        path = tmp_path / f"{fmt}-card.json"
        path.write_text(json.dumps(other))
        loaded = models.load(path)
        with torch.inference_mode():
            torch.testing.assert_close(loaded.module(example[:1]), module(example[:1]))


def test_preprocess_matches_card(tmp_path: Path) -> None:
    card_path, _ = _saved(tmp_path)
    loaded = models.load(card_path)
    image = Image.new("L", (56, 40), color=255)
    tensor = loaded.preprocess(image)
    assert tensor.shape == (1, 28, 28) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor, torch.full((1, 28, 28), (1.0 - 0.5) / 0.25))
