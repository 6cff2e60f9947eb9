"""A batch sampled for activation monitoring: answered as any other, summarized on its first images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models.activation_stats import SUMMARY_IMAGES, MapSummary, summarize_tensor
from service.devices import plan_for
from service.engine import Engine
from tests.helpers import Digits


def test_a_sampled_batch_answers_as_any_other_and_summarizes_its_first_images(
    digits: Digits,
) -> None:
    loaded = models.load(models.default_model_path())
    engine = Engine(loaded, plan_for("cpu", "fp32"))
    pixels = torch.from_numpy(
        np.stack([loaded.preprocess.to_uint8(image) for image in digits.images[:20]])
    )
    names = frozenset({"relu1", "relu3"})
    plain = engine.run([pixels])
    sampled = engine.run([pixels], summarize=names)
    # The same forward pass as an unsampled batch: the very same numbers.
    np.testing.assert_array_equal(sampled.probabilities, plain.probabilities)
    np.testing.assert_array_equal(sampled.logits, plain.logits)
    assert set(sampled.summaries) == names and not sampled.features

    first = engine.run([pixels[:SUMMARY_IMAGES]], capture=names)
    for name in names:
        maps = first.features[name]
        summary = sampled.summaries[name]
        again = summarize_tensor(torch.from_numpy(maps))  # the same maps, reduced the same way
        assert (summary.count, summary.mean, summary.m2, summary.zeros) == (
            again.count,
            again.mean,
            again.m2,
            again.zeros,
        )
        np.testing.assert_array_equal(summary.channel_means, again.channel_means)
        reference = MapSummary.of(maps)
        assert summary.count == reference.count == maps.size
        assert summary.zeros == reference.zeros > 0
        assert summary.mean == pytest.approx(reference.mean, rel=1e-9)
        assert summary.m2 == pytest.approx(reference.m2, rel=1e-6)
        np.testing.assert_allclose(summary.channel_max, reference.channel_max)
