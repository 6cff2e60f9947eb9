"""The committed default model, evaluated here on its held-out split (not read from its card)."""

from __future__ import annotations

import models
from models.evaluate import evaluate
from tests.helpers import Digits


def test_shipped_model_reaches_target_accuracy(digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    assert loaded.card.name == "mnist-cnn"
    assert loaded.card.labels == tuple(str(d) for d in range(10))
    result = evaluate(
        loaded.module, loaded.preprocess, digits.images, digits.labels, loaded.card.labels
    )
    assert len(digits.labels) == 1000
    assert result.accuracy >= 0.975
    # the card's recorded metric is honest: it equals what we just measured
    assert loaded.card.metrics is not None
    assert abs(loaded.card.metrics.accuracy - result.accuracy) < 1e-6


def test_shipped_files_are_small() -> None:
    card = models.default_model_path()
    weights = card.with_suffix(".pt")
    assert card.stat().st_size + weights.stat().st_size < 2 * 1024 * 1024
