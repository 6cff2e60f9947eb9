"""Activation monitoring: statistics of the layers on live traffic, and their drift.

The batcher samples one batch in every `1 / sample_rate` (deterministically, so
the cost is a fixed fraction); a sampled batch also summarizes the monitored
layers' maps on the engine's device (models.activation_stats.MapSummary: a few
numbers per channel and image, never the maps themselves). The worker hands the
summaries here after the batch's answers are delivered.

Windows are counted in images: the current window fills, and once it holds
`window_images` images it becomes the last complete window and a new one
starts. Metrics and /activations read the last complete window (the current
one until a first window completes): a reading then always covers a full
window, and a shift in traffic shows within one window.

Label cardinality: one series per monitored layer, at most MAX_LAYERS layers
per model (the card's profiled layers, or the activation layers spread evenly
over the network); predicted-class counts go to metrics only for models of at
most service.activation_metrics.MAX_CLASS_SERIES classes (JSON always has them).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.activation_profile import ActivationProfile
from models.activation_stats import ActivationWindow, MapSummary, default_profile_layers
from models.feature_layer import FeatureLayer

MAX_LAYERS = 32


def monitored_layers(
    layers: Sequence[FeatureLayer], profile: ActivationProfile | None
) -> list[FeatureLayer]:
    """The profiled layers when the card has a profile; else the activation layers, at most
    MAX_LAYERS of them spread evenly from the first to the last."""
    if profile is not None:
        chosen = [layer for layer in layers if layer.name in profile.layers]
    else:
        chosen = default_profile_layers(layers)
    if len(chosen) <= MAX_LAYERS:
        return chosen
    picks = np.linspace(0, len(chosen) - 1, MAX_LAYERS).round().astype(int)
    return [chosen[i] for i in sorted(set(picks.tolist()))]


class ActivationMonitor:
    """One served model's sampled activation statistics (service.batch_run.BatchSampler)."""

    def __init__(
        self,
        layers: Sequence[FeatureLayer],
        classes: int,
        profile: ActivationProfile | None,
        *,
        sample_rate: float,
        window_images: int,
    ) -> None:
        self.layers = [layer.name for layer in monitored_layers(layers, profile)]
        self.profile = profile
        self.sample_rate = sample_rate
        self.window_images = window_images
        self._classes = classes
        self._every = math.inf if sample_rate <= 0 else max(1, round(1 / sample_rate))
        self._batches = itertools.count(1)  # next() is atomic: workers may share a monitor
        self._capture = frozenset(self.layers)
        self._lock = threading.Lock()
        self._current = self._window()
        self._last: ActivationWindow | None = None
        self._completed = 0

    def _window(self) -> ActivationWindow:
        return ActivationWindow(self.layers, self._classes, self.profile)

    def layers_for_next_batch(self) -> frozenset[str]:
        """The layers to summarize in the batch about to run: all monitored ones, or none."""
        return self._capture if next(self._batches) % self._every == 0 else frozenset()

    def observe(self, summaries: Mapping[str, MapSummary], probs: NDArray[Any]) -> None:
        with self._lock:
            self._current.update(summaries, probs)
            if self._current.images >= self.window_images:
                self._last, self._current = self._current, self._window()
                self._completed += 1

    def reading(self) -> dict[str, Any]:
        """The window metrics report (the last complete one, else the one filling), as read
        under the lock: the worker may be adding a batch meanwhile."""
        with self._lock:
            return (self._last or self._current).summary()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            current, last = self._current.summary(), self._last.summary() if self._last else None
            completed = self._completed
        return {
            "completed_windows": completed,
            "sample_rate": self.sample_rate,
            "window_images": self.window_images,
            "layers": self.layers,
            "statistic": "psi",
            "current": current,
            "last": last,
            "reference": self.profile.model_dump(mode="json") if self.profile else None,
        }
