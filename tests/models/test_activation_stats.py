"""Activation statistics and PSI drift: exact values on known tensors, and real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import LoadedModel, load
from models.activation_stats import (
    ActivationProfile,
    ActivationWindow,
    LayerStats,
    MapSummary,
    PredictionStats,
    RunningMoments,
    bin_counts,
    default_profile_layers,
    profile_images,
    psi,
    quantile_edges,
    summarize_tensor,
)
from models.architectures import build_model
from models.data import mnist_split
from models.layers import capturing, feature_layers
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def mnist() -> LoadedModel:
    return load(ROOT / "models" / "weights" / "mnist-cnn.json")


def known_maps() -> np.ndarray:
    """Two images, two channels of 1 x 2; channel 1 never exceeds 0."""
    return np.array(
        [[[[0.0, 2.0]], [[-1.0, -3.0]]], [[[0.0, 1.0]], [[-2.0, 0.0]]]], dtype=np.float32
    )


def test_layer_stats_of_known_maps_in_two_batches() -> None:
    stats = LayerStats(edges=(-1.5, 0.0))
    maps = known_maps()
    first = stats.update(maps[:1])
    second = stats.update(maps[1:])
    # values 0, 2, -1, -3, 0, 1, -2, 0: sum -3, sum of squares 19, three zeros
    assert stats.moments.count == 8
    assert stats.moments.mean == pytest.approx(-3 / 8)
    assert stats.moments.std == pytest.approx(np.sqrt(19 / 8 - (3 / 8) ** 2))
    assert stats.zero_fraction == pytest.approx(3 / 8)
    assert stats.never_fired_fraction == pytest.approx(1 / 2)
    np.testing.assert_allclose(first, [[1.0, -2.0]])
    np.testing.assert_allclose(second, [[0.5, -1.0]])
    # channel means 1, -2, 0.5, -1 in (-inf, -1.5], (-1.5, 0], (0, inf): -2 | -1 | 1, 0.5
    assert stats.counts is not None
    assert stats.counts.tolist() == [1, 1, 2]


def test_running_moments_equal_numpy_over_uneven_batches() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(5.0, 2.0, size=1001)
    moments = RunningMoments()
    for part in np.split(values, [1, 7, 500]):
        moments.add(part)
    assert moments.mean == pytest.approx(values.mean(), rel=1e-12)
    assert moments.std == pytest.approx(values.std(), rel=1e-12)


def test_psi_by_hand() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))
    # an empty bin is floored at 1e-4, not infinite
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(
        0.5 * np.log(1.0 / 0.5) + (1e-4 - 0.5) * np.log(1e-4 / 0.5)
    )


def test_psi_of_samples_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(4)
    reference = rng.normal(size=20_000)
    edges = quantile_edges(reference)
    expected = bin_counts(reference, edges) / reference.size
    np.testing.assert_allclose(expected, 0.1, atol=1e-4)  # deciles
    same = rng.normal(size=5_000)
    shifted = rng.normal(loc=1.0, size=5_000)
    assert psi(expected, bin_counts(same, edges) / same.size) < 0.01
    assert psi(expected, bin_counts(shifted, edges) / shifted.size) > 0.25


def test_tied_quantiles_merge_and_ties_fall_in_the_lower_bin() -> None:
    values = np.concatenate([np.zeros(60), np.arange(1.0, 41.0)])  # 60% exact zeros
    edges = quantile_edges(values)
    # the 10% to 50% quantiles are all 0: one edge; 60% interpolates to 0.4
    np.testing.assert_allclose(edges, [0.0, 0.4, 10.3, 20.2, 30.1])
    counts = bin_counts(values, edges)
    assert counts[0] == 60 and counts.sum() == 100


def test_prediction_buckets_and_classes() -> None:
    stats = PredictionStats(num_classes=3)
    stats.update(np.array([[0.3, 0.3, 0.4], [0.5, 0.25, 0.25], [0.005, 0.995, 0.0]]))
    assert stats.confidence.tolist() == [1, 1, 0, 0, 0, 0, 0, 1]  # <0.5, [0.5, 0.6), >=0.99
    assert stats.classes.tolist() == [1, 1, 1]


def test_capture_keeps_each_call_and_copies_rewritten_outputs() -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet18", num_classes=10, in_channels=3).eval()
    by_name = {layer.name: layer for layer in feature_layers(resnet, (3, 32, 32))}
    names = ["maxpool", "layer1.0.bn1", "layer1.0.relu", "layer1.0.relu_1", "layer1.0"]
    maps: dict[str, torch.Tensor] = {}
    with torch.no_grad(), capturing(resnet, [by_name[n] for n in names], maps):
        resnet(torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(1)))
    block = resnet.layer1[0]
    with torch.no_grad():
        bn1 = block.bn1(block.conv1(maps["maxpool"]))
    torch.testing.assert_close(maps["layer1.0.bn1"], bn1)  # before the in-place ReLU
    assert (bn1 < 0).any()
    torch.testing.assert_close(maps["layer1.0.relu"], torch.relu(bn1))
    torch.testing.assert_close(maps["layer1.0.relu_1"], maps["layer1.0"])
    assert not torch.equal(maps["layer1.0.relu"], maps["layer1.0.relu_1"])
    assert all(not m._forward_hooks for m in resnet.modules())


# --- real digits: a profile of the training split, and served digits against it -----------


@pytest.fixture(scope="module")
def profile(mnist: LoadedModel) -> ActivationProfile:
    split = mnist_split()
    layers = default_profile_layers(feature_layers(mnist.module, (1, 28, 28)))
    return profile_images(mnist.module, [mnist.preprocess(i) for i in split.train_images], layers)


def window(
    mnist: LoadedModel, profile: ActivationProfile, images: list[Image.Image]
) -> ActivationWindow:
    layers = [
        layer for layer in feature_layers(mnist.module, (1, 28, 28)) if layer.name in profile.layers
    ]
    maps: dict[str, torch.Tensor] = {}
    batch = torch.stack([mnist.preprocess(image) for image in images])
    with torch.inference_mode(), capturing(mnist.module, layers, maps):
        probabilities = torch.softmax(mnist.module(batch), dim=1).numpy()
    result = ActivationWindow.for_profile(profile)
    for start in range(0, len(images), 250):  # as batches arrive
        rows = slice(start, start + 250)
        result.update({n: m[rows].numpy() for n, m in maps.items()}, probabilities[rows])
    return result


def test_the_profile_of_the_training_digits(profile: ActivationProfile) -> None:
    assert list(profile.layers) == ["relu1", "relu2", "relu3", "relu4", "relu5"]
    assert profile.images == 4000
    for layer in profile.layers.values():
        assert 0.3 < layer.zero_fraction < 0.8  # ReLUs switch off about half the units
        assert layer.std > 0 and layer.mean > 0
        assert len(layer.bin_fractions) == len(layer.bin_edges) + 1 == 10
        assert sum(layer.bin_fractions) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(profile.class_fractions, 0.1, atol=0.005)  # 400 per class
    assert ActivationProfile.model_validate_json(profile.model_dump_json()) == profile


def test_held_out_digits_do_not_drift(mnist: LoadedModel, profile: ActivationProfile) -> None:
    drift = window(mnist, profile, mnist_split().test_images)
    layer_psi = drift.layer_psi()
    assert set(layer_psi) == set(profile.layers)
    assert max(layer_psi.values()) < 0.1, layer_psi
    assert max(drift.prediction_psi().values()) < 0.1


def test_inverted_digits_drift_on_every_early_layer(
    mnist: LoadedModel, profile: ActivationProfile
) -> None:
    inverted = [Image.fromarray(255 - np.asarray(i)) for i in mnist_split().test_images]
    layer_psi = window(mnist, profile, inverted).layer_psi()
    assert min(layer_psi[n] for n in ("relu1", "relu2", "relu3", "relu4")) > 0.25, layer_psi


def test_rotated_digits_drift_in_the_deep_layer_and_the_predictions(
    mnist: LoadedModel, profile: ActivationProfile
) -> None:
    rotated = [image.rotate(90) for image in mnist_split().test_images]
    drift = window(mnist, profile, rotated)
    # Edge detectors of every orientation fire about as much on a turned digit: the early
    # layers' channel means barely move; the last layer and the confidence do.
    assert drift.layer_psi()["relu5"] > 0.1
    assert drift.prediction_psi()["confidence"] > 0.25


def test_a_summary_on_the_device_equals_one_of_the_maps() -> None:
    """The engine reduces maps where they are; the statistics must not tell the difference."""
    generator = torch.Generator().manual_seed(4)
    maps = torch.relu(torch.randn((3, 5, 7, 6), generator=generator))
    on_device, of_maps = summarize_tensor(maps), MapSummary.of(maps.numpy())
    assert on_device.count == of_maps.count and on_device.zeros == of_maps.zeros > 0
    assert on_device.mean == pytest.approx(of_maps.mean, rel=1e-9)
    assert on_device.m2 == pytest.approx(of_maps.m2, rel=1e-6)
    np.testing.assert_allclose(on_device.channel_max, of_maps.channel_max)
    np.testing.assert_allclose(on_device.channel_means, of_maps.channel_means, rtol=1e-6)
    whole, parts = LayerStats(), LayerStats()
    whole.update(maps.numpy())
    parts.update(summarize_tensor(maps[:1]))
    parts.update(summarize_tensor(maps[1:]))
    assert parts.moments.mean == pytest.approx(whole.moments.mean, rel=1e-9)
    assert parts.moments.std == pytest.approx(whole.moments.std, rel=1e-6)
    assert parts.zero_fraction == whole.zero_fraction
