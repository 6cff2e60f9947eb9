"""Command-line arguments shared by cnn-train and cnn-pack: the input spec of a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.card import InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers, got {text!r}") from None


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x224x224, got {text!r}")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def add_input_spec_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input spec (written to the model card)")
    group.add_argument("--input", type=_shape, default=(3, 224, 224), help="CxHxW, e.g. 3x224x224")
    group.add_argument("--mean", type=_floats, help="per-channel mean (default: ImageNet's)")
    group.add_argument("--std", type=_floats, help="per-channel std (default: ImageNet's)")
    group.add_argument(
        "--resize-size",
        type=int,
        help="scale the short side to this, then centre-crop HxW (default: straight resize)",
    )


def input_spec_from_args(args: argparse.Namespace) -> InputSpec:
    channels, height, width = args.input
    mean = args.mean or (IMAGENET_MEAN if channels == 3 else (0.5,))
    std = args.std or (IMAGENET_STD if channels == 3 else (0.5,))
    return InputSpec(
        channels=channels,
        height=height,
        width=width,
        resize="resize_center_crop" if args.resize_size else "resize",
        resize_size=args.resize_size,
        mean=mean,
        std=std,
    )


def read_labels(path: Path) -> tuple[str, ...]:
    labels = tuple(
        line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    if not labels:
        raise SystemExit(f"error: {path} holds no labels (one per line)")
    return labels
