from __future__ import annotations

import numpy as np

from models import build_model
from models.data import DEFAULT_SEED, mnist_split, stratified_indices
from models.evaluate import evaluate
from models.preprocess import Preprocessor
from models.train import MNIST_INPUT, MNIST_LABELS, TrainConfig, train


def test_split_is_stratified_seeded_and_disjoint() -> None:
    labels = np.repeat(np.arange(10), 500)
    train_a, test_a = stratified_indices(labels, seed=DEFAULT_SEED)
    train_b, test_b = stratified_indices(labels, seed=DEFAULT_SEED)
    assert np.array_equal(test_a, test_b) and np.array_equal(train_a, train_b)
    assert len(train_a) == 4000 and len(test_a) == 1000
    assert not set(train_a) & set(test_a)
    assert np.bincount(labels[test_a]).tolist() == [100] * 10
    other, _ = stratified_indices(labels, seed=DEFAULT_SEED + 1)
    assert not np.array_equal(other, train_a)


def test_one_epoch_on_256_digits_lowers_the_loss() -> None:
    split = mnist_split()
    images, labels = split.train_images[:256], split.train_labels[:256]
    module = build_model("mnist_cnn", num_classes=10, in_channels=1)
    preprocess = Preprocessor(MNIST_INPUT)
    before = evaluate(module, preprocess, images, labels, MNIST_LABELS).accuracy
    losses = train(
        module,
        preprocess,
        images,
        labels,
        TrainConfig(epochs=2, batch_size=32, seed=1, augment=False),
        progress=False,
    )
    after = evaluate(module, preprocess, images, labels, MNIST_LABELS).accuracy
    assert losses[1] < losses[0]
    assert after > before
