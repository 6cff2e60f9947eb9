"""Prometheus families for activation monitoring, read from each model's monitor when scraped.

Gauges of the reported window (service.monitoring): they describe a window of
traffic, not a running total, so they are not counters. Series per model:
five per monitored layer (at most service.monitoring.MAX_LAYERS layers), two
prediction drifts, the confidence buckets, and one per class for models of at
most MAX_CLASS_SERIES classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.activation_profile import CONFIDENCE_EDGES

LAYER_FAMILIES = (
    ("cnn_activation_mean", "mean activation of the layer in the window"),
    ("cnn_activation_std", "standard deviation of the layer's activations in the window"),
    ("cnn_activation_zero_ratio", "fraction of exact zeros (units switched off) in the window"),
    ("cnn_activation_dead_channel_ratio", "fraction of channels that never fired in the window"),
    ("cnn_activation_drift_psi", "PSI of the layer's channel means against the card's profile"),
)
MAX_CLASS_SERIES = 100  # predicted-class series only for models of at most this many classes


class ActivationReader(Protocol):
    """What these gauges read: service.monitoring.ActivationReader."""

    @property
    def sample_rate(self) -> float: ...

    def reading(self) -> dict[str, Any]: ...


_LAYER_KEYS = ("mean", "std", "zero_fraction", "never_fired_fraction", "drift_psi")
_BUCKETS = [f"<{CONFIDENCE_EDGES[0]}"] + [f">={edge}" for edge in CONFIDENCE_EDGES]


class ActivationCollector(Collector):
    def __init__(self) -> None:
        self._monitors: dict[str, ActivationReader] = {}

    def watch(self, model: str, monitor: ActivationReader | None) -> None:
        if monitor is not None and monitor.sample_rate > 0:
            self._monitors[model] = monitor

    def unwatch(self, model: str) -> None:
        self._monitors.pop(model, None)

    def collect(self) -> Iterable[Metric]:
        layer = [GaugeMetricFamily(n, d, labels=["model", "layer"]) for n, d in LAYER_FAMILIES]
        drift = GaugeMetricFamily(
            "cnn_prediction_drift_psi",
            "PSI of top-1 confidence and predicted classes against the card's profile",
            labels=["model", "kind"],
        )
        images = GaugeMetricFamily(
            "cnn_activation_window_images",
            "sampled images in the reported window",
            labels=["model"],
        )
        confidence = GaugeMetricFamily(
            "cnn_top1_confidence_ratio",
            "fraction of the window's images by top-1 confidence",
            labels=["model", "bucket"],
        )
        classes = GaugeMetricFamily(
            "cnn_predicted_class_ratio",
            "fraction of the window's images by class",
            labels=["model", "class"],
        )
        for model, monitor in self._monitors.items():
            summary = monitor.reading()
            images.add_metric([model], summary["images"])
            for name, figures in summary["layers"].items():
                for family, key in zip(layer, _LAYER_KEYS, strict=True):
                    if figures[key] is not None:
                        family.add_metric([model, name], figures[key])
            for kind, value in summary["prediction_drift_psi"].items():
                drift.add_metric([model, kind], value)
            total = max(1, summary["images"])
            for bucket, count in zip(_BUCKETS, summary["confidence_counts"], strict=True):
                confidence.add_metric([model, bucket], count / total)
            if len(summary["class_counts"]) <= MAX_CLASS_SERIES:
                for index, count in enumerate(summary["class_counts"]):
                    classes.add_metric([model, str(index)], count / total)
        yield from (*layer, drift, images, confidence, classes)
