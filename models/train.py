"""cnn-train: train the default CNN on real MNIST digits, or any registered
architecture on an ImageFolder directory, and write weights plus card.

Images go through the card's own Preprocessor (after augmentation), so the
served model sees inputs exactly as it was trained on them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from models.activation_profile import ActivationProfile
from models.architectures import ARCHITECTURES, build_model
from models.card import InputSpec, Metrics, ModelCard, Training
from models.checkpoint import card_path_for, load, save_checkpoint
from models.cli_args import add_input_spec_arguments, input_spec_from_args
from models.data import DEFAULT_SEED, MNIST_SOURCE, Split, mnist_split, stratified_indices
from models.errors import ModelLoadError
from models.evaluate import Evaluation, evaluate
from models.preprocess import Preprocessor
from models.profiling import profile_model, write_profile
from models.weights import DEFAULT_MODEL_NAME

# MNIST's own pixel statistics (of the 60,000 training digits, the usual constants).
MNIST_INPUT = InputSpec(channels=1, height=28, width=28, mean=(0.1307,), std=(0.3081,))
MNIST_LABELS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 14
    batch_size: int = 64
    learning_rate: float = 4e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    seed: int = DEFAULT_SEED
    augment: bool = True


def _augmenter(seed: int) -> v2.Transform:
    torch.manual_seed(seed)
    # Small shifts and rotations: digits are written off-centre and slanted.
    return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _optimizer(
    module: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW under a one-cycle learning-rate schedule over the whole run."""
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    return optimizer, scheduler


def train(
    module: nn.Module,
    preprocess: Preprocessor,
    images: Sequence[Image.Image],
    labels: NDArray[np.int64],
    config: TrainConfig,
    *,
    progress: bool = True,
) -> list[float]:
    """Train in place; return the mean loss of each epoch."""
    from tqdm import tqdm  # a `train` extra

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    augment = _augmenter(config.seed)
    targets = torch.from_numpy(labels)
    optimizer, scheduler = _optimizer(module, config, math.ceil(len(images) / config.batch_size))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    epoch_losses: list[float] = []
    for epoch in range(1, config.epochs + 1):
        module.train()
        total_loss, correct, seen = 0.0, 0, 0
        batches = _epoch_batches(len(images), config.batch_size, generator)
        bar = tqdm(
            batches, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, mininterval=1.0
        )
        for index in bar:
            picked = [images[i] for i in index.tolist()]
            if config.augment:
                picked = [augment(img) for img in picked]
            batch = torch.stack([preprocess(img) for img in picked])
            target = targets[index]
            optimizer.zero_grad(set_to_none=True)
            logits = module(batch)
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == target).sum())
            seen += len(index)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
        epoch_losses.append(total_loss / seen)
    module.eval()
    return epoch_losses


def _metrics(result: Evaluation, described: str) -> Metrics:
    return Metrics(
        accuracy=round(result.accuracy, 6),
        per_class_accuracy={k: round(v, 6) for k, v in result.per_class_accuracy.items()},
        evaluated_on=described,
    )


def _image_folder_split(root: Path, seed: int) -> tuple[Split, tuple[str, ...]]:
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(root))
    labels = np.asarray(dataset.targets, dtype=np.int64)
    train_idx, test_idx = stratified_indices(labels, seed=seed)

    def images(indices: NDArray[np.int64]) -> list[Image.Image]:
        return [dataset[int(i)][0] for i in indices]

    split = Split(images(train_idx), labels[train_idx], images(test_idx), labels[test_idx])
    return split, tuple(dataset.classes)


def run_training(args: argparse.Namespace) -> Path:
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    torch.manual_seed(config.seed)
    if args.data:
        split, labels = _image_folder_split(Path(args.data), config.seed)
        spec, arch, data_source = input_spec_from_args(args), args.arch, str(args.data)
        name = args.name or f"{arch}-{Path(args.data).name}"
    else:
        split, labels = mnist_split(config.seed), MNIST_LABELS
        spec, arch, data_source = MNIST_INPUT, "mnist_cnn", MNIST_SOURCE
        name = args.name or DEFAULT_MODEL_NAME
    preprocess = Preprocessor(spec)
    module = build_model(arch, num_classes=len(labels), in_channels=spec.channels)
    started = time.monotonic()
    train(module, preprocess, split.train_images, split.train_labels, config)
    elapsed = time.monotonic() - started
    result = evaluate(module, preprocess, split.test_images, split.test_labels, labels)
    print(f"trained in {elapsed:.0f} s; test accuracy {result.accuracy:.4f} ({split.description})")
    profile = profile_model(
        module, preprocess, split.train_images, data=_profiled(data_source, split)
    )
    return save_checkpoint(
        module,
        out_dir=Path(args.out),
        name=name,
        labels=labels,
        input_spec=spec,
        architecture=arch,
        training=Training(
            data=data_source,
            split=split.description,
            seed=config.seed,
            epochs=config.epochs,
            notes="AdamW + one-cycle LR, label smoothing 0.05, random affine (±10°, ±10% shift)",
        ),
        metrics=_metrics(result, f"held-out test split ({len(split.test_labels)} images)"),
        activation_profile=profile,
    )


def _profiled(data_source: str, split: Split) -> str:
    return f"{data_source}: the {len(split.train_labels)} training images, not augmented"


def run_profiling(path: Path, data: str | None) -> ActivationProfile:
    """Profile a trained model over its training images and store that in its card.

    The split is rebuilt from the card's seed: MNIST's, or the ImageFolder at `data`.
    Only the card changes; the weights, and so their sha256, stay as they are.
    """
    loaded = load(path)
    training = loaded.card.training
    seed = training.seed if training else DEFAULT_SEED
    if data:
        split, source = _image_folder_split(Path(data), seed)[0], data
    else:
        split, source = mnist_split(seed), MNIST_SOURCE
    profile = profile_model(
        loaded.module, loaded.preprocess, split.train_images, data=_profiled(source, split)
    )
    write_profile(loaded.path, profile)
    load(path)  # the card still matches its weights
    print(f"{loaded.path}: profiled {profile.images} images over {len(profile.layers)} layers")
    return profile


def _eval_split(
    card: ModelCard, data: Path | None, seed: int
) -> tuple[list[Image.Image], NDArray[np.int64], str]:
    """The held-out images and labels to evaluate `card` on: the --data folder's, or MNIST's.

    Refused at once, before any image is read, when the card is not an MNIST model and no
    folder is given; a folder's classes are matched to the card's labels by name.
    """
    if data is None:
        if card.labels != MNIST_LABELS or card.input.shape != MNIST_INPUT.shape:
            raise SystemExit(
                f"cnn-train: {card.name} is not an MNIST digit model (labels {list(card.labels)[:5]}"
                f", input {'x'.join(map(str, card.input.shape))}); pass --data DIR, an "
                "ImageFolder with one sub-folder per label, to evaluate it"
            )
        split = mnist_split(seed)
        return split.test_images, split.test_labels, "test digits"
    split, classes = _image_folder_split(data, seed)
    unknown = [name for name in classes if name not in card.labels]
    if unknown:
        raise SystemExit(
            f"cnn-train: {data} has classes the card does not know: {unknown}; "
            f"its labels are {list(card.labels)}"
        )
    index = np.asarray([card.labels.index(name) for name in classes], dtype=np.int64)
    return split.test_images, index[split.test_labels], f"held-out images of {data}"


def run_evaluation(path: Path, seed: int, data: Path | None = None) -> Evaluation:
    card = ModelCard.read(card_path_for(path))
    images, labels, described = _eval_split(card, data, seed)
    loaded = load(path)
    result = evaluate(loaded.module, loaded.preprocess, images, labels, loaded.card.labels)
    print(f"{loaded.card.name}: accuracy {result.accuracy:.4f} on {len(labels)} {described}")
    print(result.confusion_table(loaded.card.labels))
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnn-train", description=__doc__)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "weights"), help="output folder"
    )
    parser.add_argument(
        "--name",
        help=f"model name, the file stem (default: {DEFAULT_MODEL_NAME}, or ARCH-DIR with --data)",
    )
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--eval-only",
        metavar="PATH",
        help="evaluate a checkpoint on the held-out split of --data, or of MNIST for a digit model",
    )
    parser.add_argument(
        "--profile-only",
        metavar="PATH",
        help="store the activation profile over the training images in an existing card "
        "(with --data for an ImageFolder model); the weights are not touched",
    )
    parser.add_argument(
        "--data", metavar="DIR", help="ImageFolder directory (one sub-folder per class)"
    )
    parser.add_argument(
        "--arch", default="resnet18", choices=sorted(ARCHITECTURES), help="with --data"
    )
    add_input_spec_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.eval_only:
        data = Path(args.data) if args.data else None
        try:
            run_evaluation(Path(args.eval_only), args.seed, data)
        except ModelLoadError as exc:
            print(f"cnn-train: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.profile_only:
        run_profiling(Path(args.profile_only), args.data)
        return 0
    card_path = run_training(args)
    print(f"wrote {card_path} and its weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
