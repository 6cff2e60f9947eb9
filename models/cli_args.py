"""Command-line arguments shared by cnn-train and cnn-pack: the input spec of a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.card import InputSpec, label_problem

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
    # One value per channel, as separate words or comma-separated: 0.5 0.4 0.3 or 0.5,0.4,0.3.
    for flag, what in (("--mean", "mean"), ("--std", "std")):
        group.add_argument(
            flag, type=_floats, nargs="+", help=f"per-channel {what} (default: ImageNet's)"
        )
    group.add_argument(
        "--resize-size",
        type=int,
        help="scale the short side to this, then centre-crop HxW (default: straight resize)",
    )


def _joined(groups: list[tuple[float, ...]] | None) -> tuple[float, ...]:
    return tuple(value for group in groups or [] for value in group)


def input_spec_from_args(args: argparse.Namespace) -> InputSpec:
    channels, height, width = args.input
    mean = _joined(args.mean) or (IMAGENET_MEAN if channels == 3 else (0.5,))
    std = _joined(args.std) or (IMAGENET_STD if channels == 3 else (0.5,))
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
    """One label per line. Only LF (or CRLF) ends a line: any other line break or control
    character inside a line is refused, not silently split into more labels."""
    # Bytes, not read_text: its universal newlines would turn a lone CR into a line break.
    lines = path.read_bytes().decode("utf-8").split("\n")
    labels: list[str] = []
    for number, line in enumerate(lines, start=1):
        label = line.strip()
        if not label:
            continue
        problem = label_problem(label)
        if problem is not None:
            raise SystemExit(f"error: {path}, line {number}: {problem}")
        labels.append(label)
    if not labels:
        raise SystemExit(f"error: {path} holds no labels (one per line)")
    return tuple(labels)
