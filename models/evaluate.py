"""Accuracy, per-class accuracy and a confusion matrix, through the card's preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from models.preprocess import Preprocessor


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    per_class_accuracy: dict[str, float]
    confusion: NDArray[np.int64]  # rows: true class, columns: predicted class
    predictions: NDArray[np.int64]

    def confusion_table(self, labels: Sequence[str]) -> str:
        width = max(5, *(len(label) for label in labels))
        header = "true\\pred".ljust(width + 2) + "".join(label.rjust(width + 1) for label in labels)
        rows = [
            label.ljust(width + 2) + "".join(str(n).rjust(width + 1) for n in row)
            for label, row in zip(labels, self.confusion, strict=True)
        ]
        return "\n".join([header, *rows])


def predict(
    module: nn.Module,
    preprocess: Preprocessor,
    images: Sequence[Image.Image],
    batch_size: int = 256,
) -> NDArray[np.int64]:
    """Top-1 class index for each image."""
    module.eval()
    out: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.stack([preprocess(img) for img in images[start : start + batch_size]])
            out.append(module(batch).argmax(dim=1))
    return torch.cat(out).numpy().astype(np.int64)


def evaluate(
    module: nn.Module,
    preprocess: Preprocessor,
    images: Sequence[Image.Image],
    labels: NDArray[np.int64],
    label_names: Sequence[str],
) -> Evaluation:
    predictions = predict(module, preprocess, images)
    n = len(label_names)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    totals = confusion.sum(axis=1)
    per_class = {
        name: float(confusion[i, i] / totals[i]) if totals[i] else 0.0
        for i, name in enumerate(label_names)
    }
    return Evaluation(
        accuracy=float((predictions == labels).mean()),
        per_class_accuracy=per_class,
        confusion=confusion,
        predictions=predictions,
    )
