"""Activation statistics of a model, and drift of served inputs against a reference profile.

Per layer, over a set of images: the mean and standard deviation of every
activation, the fraction of exact zeros (units a ReLU switched off), and which
channels ever fired (max > 0), whence the fraction of channels that never did.
Per model: the top-1 confidence in fixed buckets and the predicted-class counts.

Drift statistic: the population stability index (PSI) of one distribution per
layer, that of per-image channel means (each image gives C values, the spatial
mean of each channel's map), binned on the reference's deciles:

    PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i)

with e_i the reference fractions and a_i the observed ones (both floored at
1e-4 so that an empty bin counts as rare, not infinite). Why this statistic:
it needs only the bin edges and 10 fractions per layer to be stored (the card
stays small), it is cheap to update as counts, it is symmetric and read the
same way for every layer whatever the activations' scale (deciles make every
reference bin hold a tenth), and its thresholds are the usual ones in model
monitoring: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a
significant one. Channel means rather than raw activations: one value per
channel and image follows what the image contains, not where, and keeps the
counts to C per image. A Kolmogorov-Smirnov test would need the reference
sample itself, and its p-values flag trivial shifts once windows are large.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from models.activation_profile import CONFIDENCE_EDGES, ActivationProfile, LayerProfile
from models.feature_layer import FeatureLayer
from models.layers import capturing

PSI_BINS = 10
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
_PSI_FLOOR = 1e-4
# Layer types whose outputs are monitored by default: after them a zero is a switched-off unit.
ACTIVATION_TYPES = frozenset(
    {"ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Hardswish", "Mish"}
)
_SIGNIFICANT_DIGITS = 6
Floats = Sequence[float] | NDArray[np.floating]


def channel_means(maps: NDArray[np.floating]) -> NDArray[np.float64]:
    """[N, C, H, W] -> [N, C]: each channel's spatial mean, per image."""
    means: NDArray[np.float64] = maps.mean(axis=(2, 3), dtype=np.float64)
    return means


def quantile_edges(values: NDArray[np.floating], bins: int = PSI_BINS) -> NDArray[np.float64]:
    """The inner edges of `bins` equal-count bins; tied quantiles (many exact zeros) merge."""
    inner = np.quantile(np.asarray(values, dtype=np.float64), np.arange(1, bins) / bins)
    edges: NDArray[np.float64] = np.unique(inner)
    return edges


def bin_counts(values: NDArray[np.floating], edges: Floats) -> NDArray[np.int64]:
    """Counts in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values.ravel(), side="left")
    counts: NDArray[np.int64] = np.bincount(index, minlength=len(edges) + 1).astype(np.int64)
    return counts


def psi(expected: Floats, actual: Floats) -> float:
    """Population stability index of two bin-fraction vectors (see the module docstring)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), _PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), _PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def fractions(counts: NDArray[np.int64]) -> NDArray[np.float64]:
    total = counts.sum()
    if total == 0:
        return np.zeros(len(counts))
    fractions: NDArray[np.float64] = counts / total
    return fractions


def _rounded(values: Floats) -> tuple[float, ...]:
    return tuple(float(f"{v:.{_SIGNIFICANT_DIGITS}g}") for v in np.asarray(values).tolist())


@dataclass(frozen=True)
class MapSummary:
    """What the statistics need of one layer's [N, C, H, W] maps for a batch: a few numbers
    per channel and image instead of the maps (an engine reduces them on its device)."""

    count: int  # activations
    mean: float
    m2: float  # sum of squared deviations from `mean`
    zeros: int
    channel_max: NDArray[np.float64]  # [C]
    channel_means: NDArray[np.float64]  # [N, C]

    @classmethod
    def of(cls, maps: NDArray[np.floating]) -> MapSummary:
        mean = float(maps.mean(dtype=np.float64)) if maps.size else 0.0
        return cls(
            count=int(maps.size),
            mean=mean,
            m2=float(np.square(maps - mean, dtype=np.float64).sum()),
            zeros=int(np.count_nonzero(maps == 0)),
            channel_max=maps.max(axis=(0, 2, 3)).astype(np.float64),
            channel_means=channel_means(maps),
        )


# Images of one sampled batch that monitoring summarizes: the cost of a sampled batch stays
# that of a small one, whatever the batch size (a 32-image resnet18 batch took twice as long).
SUMMARY_IMAGES = 8


def summarize_tensor(maps: torch.Tensor) -> MapSummary:
    """MapSummary.of computed where the maps are (a GPU's memory): only the results move."""
    return summary_of(maps.numel(), map_reductions(maps))


# A layer's reductions as tensors, in this order: mean, m2, zeros, channel_max, channel_means.
REDUCTIONS = 5


def map_reductions(maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What a MapSummary holds of [N, C, H, W] maps, as tensors where the maps are (REDUCTIONS
    of them); traceable, so a traced graph can reduce the maps it makes (service.traced)."""
    x = maps.detach().float()
    mean = x.mean(dtype=torch.float64)
    deviation = x - mean.float()
    return (
        mean,
        (deviation * deviation).sum(dtype=torch.float64),
        (x == 0).sum(),
        x.amax(dim=(0, 2, 3)).double(),
        x.mean(dim=(2, 3), dtype=torch.float64),
    )


def summary_of(count: int, reductions: Sequence[torch.Tensor]) -> MapSummary:
    """The MapSummary of `count` activations from their map_reductions."""
    mean, m2, zeros, channel_max, channel_means = (_host(t).numpy() for t in reductions)
    return MapSummary(
        count=count,
        mean=float(mean),
        m2=float(m2),
        zeros=int(zeros),
        channel_max=channel_max,
        channel_means=channel_means,
    )


def _host(tensor: torch.Tensor) -> torch.Tensor:
    # .cpu() of a host tensor hands back the tensor itself, which takes the GIL inside the op.
    return tensor if tensor.device.type == "cpu" else tensor.cpu()


class RunningMoments:
    """Count, mean and variance of a stream of batches (Chan et al.'s pairwise update)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the mean

    def add(self, values: NDArray[np.floating]) -> None:
        if values.size:
            batch_mean = float(values.mean(dtype=np.float64))
            batch_m2 = float(np.square(values - batch_mean, dtype=np.float64).sum())
            self.merge(values.size, batch_mean, batch_m2)

    def merge(self, n: int, batch_mean: float, batch_m2: float) -> None:
        """Add a batch given by its count, mean and sum of squared deviations."""
        if n == 0:
            return
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self._m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """The population standard deviation (ddof = 0); 0 before any value."""
        return float(np.sqrt(self._m2 / self.count)) if self.count else 0.0


class LayerStats:
    """Running statistics of one layer's [N, C, H, W] maps."""

    def __init__(self, edges: Sequence[float] | None = None) -> None:
        self.moments = RunningMoments()
        self.zeros = 0
        self.images = 0
        self.channel_max: NDArray[np.float64] | None = None
        self.edges = None if edges is None else tuple(edges)
        self.counts = None if edges is None else np.zeros(len(edges) + 1, dtype=np.int64)

    def update(self, maps: NDArray[np.floating] | MapSummary) -> NDArray[np.float64]:
        """Add a batch (its maps, or their summary); return its channel means [N, C]."""
        batch = maps if isinstance(maps, MapSummary) else MapSummary.of(maps)
        self.moments.merge(batch.count, batch.mean, batch.m2)
        self.zeros += batch.zeros
        self.images += batch.channel_means.shape[0]
        peak = batch.channel_max
        self.channel_max = peak if self.channel_max is None else np.maximum(self.channel_max, peak)
        if self.edges is not None and self.counts is not None:
            self.counts += bin_counts(batch.channel_means, self.edges)
        return batch.channel_means

    @property
    def zero_fraction(self) -> float:
        return self.zeros / self.moments.count if self.moments.count else 0.0

    @property
    def never_fired_fraction(self) -> float:
        """Channels whose every activation so far was <= 0, as a fraction of all channels."""
        if self.channel_max is None:
            return 0.0
        return float(np.mean(self.channel_max <= 0))


class PredictionStats:
    """Top-1 confidence in the fixed CONFIDENCE_EDGES buckets, and predicted-class counts."""

    def __init__(self, num_classes: int) -> None:
        self.confidence = np.zeros(len(CONFIDENCE_EDGES) + 1, dtype=np.int64)
        self.classes = np.zeros(num_classes, dtype=np.int64)

    def update(self, probabilities: NDArray[np.floating]) -> None:
        """Add a batch of [N, classes] probabilities."""
        top1 = probabilities.max(axis=1)
        buckets = np.searchsorted(np.asarray(CONFIDENCE_EDGES), top1, side="right")
        self.confidence += np.bincount(buckets, minlength=len(self.confidence))
        self.classes += np.bincount(probabilities.argmax(axis=1), minlength=len(self.classes))


def default_profile_layers(layers: Sequence[FeatureLayer]) -> list[FeatureLayer]:
    """The activation layers (ReLU and kin); without any, the convolutions."""
    chosen = [layer for layer in layers if layer.type in ACTIVATION_TYPES]
    return chosen or [layer for layer in layers if layer.has_kernels]


def _batches(images: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Stacks of `size` images, made as they are consumed: the images need not fit in memory."""
    stream = iter(images)
    while chunk := list(itertools.islice(stream, size)):
        yield torch.stack(chunk)


def _layer_profile(stats: LayerStats, means: NDArray[np.float64]) -> LayerProfile:
    edges = _rounded(quantile_edges(means))
    return LayerProfile(
        mean=_rounded([stats.moments.mean])[0],
        std=_rounded([stats.moments.std])[0],
        zero_fraction=_rounded([stats.zero_fraction])[0],
        never_fired_fraction=_rounded([stats.never_fired_fraction])[0],
        bin_edges=edges,
        bin_fractions=_rounded(fractions(bin_counts(means, edges))),
    )


def profile_images(
    module: nn.Module,
    images: Iterable[torch.Tensor],
    layers: Sequence[FeatureLayer],
    *,
    batch_size: int = 256,
    data: str | None = None,
) -> ActivationProfile:
    """The activation profile of `module` (in eval mode) over preprocessed [C, H, W] images."""
    stats = {layer.name: LayerStats() for layer in layers}
    means: dict[str, list[NDArray[np.float64]]] = {layer.name: [] for layer in layers}
    predictions: PredictionStats | None = None
    count = 0
    for batch in _batches(images, batch_size):
        count += len(batch)
        maps: dict[str, torch.Tensor] = {}
        with torch.inference_mode(), capturing(module, layers, maps):
            probabilities = torch.softmax(module(batch).float(), dim=1).cpu().numpy()
        predictions = predictions or PredictionStats(probabilities.shape[1])
        predictions.update(probabilities)
        for name, tensor in maps.items():
            means[name].append(stats[name].update(tensor.float().cpu().numpy()))
    if predictions is None:
        raise ValueError("a profile needs at least one image")
    return ActivationProfile(
        images=count,
        data=data,
        layers={n: _layer_profile(stats[n], np.concatenate(means[n])) for n in stats},
        confidence_fractions=_rounded(fractions(predictions.confidence)),
        class_fractions=_rounded(fractions(predictions.classes)),
    )


class ActivationWindow:
    """Statistics of the images served in one window, and their drift from a profile if any."""

    def __init__(
        self, layers: Iterable[str], classes: int, profile: ActivationProfile | None = None
    ) -> None:
        self.profile = profile
        edges = {n: p.bin_edges for n, p in profile.layers.items()} if profile else {}
        self.layers = {name: LayerStats(edges.get(name)) for name in layers}
        self.predictions = PredictionStats(classes)

    @classmethod
    def for_profile(cls, profile: ActivationProfile) -> ActivationWindow:
        return cls(profile.layers, len(profile.class_fractions), profile)

    @property
    def images(self) -> int:
        return int(self.predictions.classes.sum())

    def update(
        self,
        features: Mapping[str, NDArray[np.floating] | MapSummary],
        probabilities: NDArray[np.floating],
    ) -> None:
        """Add one batch: maps [N, C, H, W] (or their summaries) of the watched layers, and
        probabilities [N, classes]."""
        for name, maps in features.items():
            if name in self.layers:
                self.layers[name].update(maps)
        self.predictions.update(probabilities)

    def layer_psi(self) -> dict[str, float]:
        """PSI of each profiled layer seen in this window against the profile."""
        if self.profile is None:
            return {}
        return {
            name: psi(self.profile.layers[name].bin_fractions, fractions(stats.counts))
            for name, stats in self.layers.items()
            if stats.counts is not None and stats.images
        }

    def prediction_psi(self) -> dict[str, float]:
        """PSI of the top-1 confidence buckets and of the predicted classes."""
        if self.profile is None or not self.images:
            return {}
        return {
            "confidence": psi(
                self.profile.confidence_fractions, fractions(self.predictions.confidence)
            ),
            "classes": psi(self.profile.class_fractions, fractions(self.predictions.classes)),
        }

    def summary(self) -> dict[str, Any]:
        """The window as JSON: per-layer figures with their drift, and the predictions."""
        drift = self.layer_psi()
        return {
            "images": self.images,
            "layers": {
                name: {
                    "mean": stats.moments.mean,
                    "std": stats.moments.std,
                    "zero_fraction": stats.zero_fraction,
                    "never_fired_fraction": stats.never_fired_fraction,
                    "drift_psi": drift.get(name),
                }
                for name, stats in self.layers.items()
            },
            "confidence_edges": list(CONFIDENCE_EDGES),
            "confidence_counts": self.predictions.confidence.tolist(),
            "class_counts": self.predictions.classes.tolist(),
            "prediction_drift_psi": self.prediction_psi(),
        }
