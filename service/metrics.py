"""Prometheus metrics: one explicit registry per app, made by the app factory.

Nothing is registered on prometheus_client's global registry, so two apps in one
process (the tests make many) never share or clash over a series. Histograms,
not counters of microseconds, carry every duration: a rate of their _sum over
their _count is a mean, their buckets give quantiles, and both aggregate across
replicas.

Buckets span this workload's range, from a small PNG's decode and a small CNN's
forward pass (tens of microseconds to milliseconds) to a ResNet-50 batch on a CPU
(seconds); bench/RESULTS.md has the measured figures:

- preprocess, per image: 25 us .. 1 s (small PNGs to large JPEGs);
- queue wait: 50 us .. 10 s (an idle queue to a saturated one);
- inference, per batch: 250 us .. 10 s (a small CNN on a GPU to a big one on a CPU);
- request: 0.5 ms .. 30 s (the default request timeout);
- batch size: 1, 2, 4, ... and the max batch size itself, one bucket per warmed-up size;
- loading a model version, warm-up included: 0.1 s .. 10 min (a small CNN to a large one
  warmed at many batch sizes on a CPU).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from service.activation_metrics import ActivationCollector, ActivationReader
from service.batch_sizes import warm_up_sizes
from service.registry import ServedModel

REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
PREPROCESS_BUCKETS = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
)  # fmt: skip
QUEUE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
INFERENCE_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

BATCH_ERROR_KINDS = ("oom", "error", "timeout")
REJECTION_REASONS = ("queue_full", "too_large", "not_ready")


def multiprocess_dir() -> str | None:
    """Where every process of a multi-process service writes its values (prometheus-client's
    multiprocess mode, chosen by this variable before prometheus_client is imported)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class QueueSource(Protocol):
    """A queue whose depth a gauge reads when scraped: service.batching.Batcher."""

    @property
    def queue_depth(self) -> int: ...


class LiveGauges(Collector):
    """Gauges read from this process's objects when scraped: readiness, queue depths, and
    the model versions served (in the process that holds the models).

    Read, not pushed: values pushed from two threads could land out of order, and a
    version unloaded leaves no stale series behind.
    """

    def __init__(self) -> None:
        self.is_ready: Callable[[], bool] | None = None
        self.queues: dict[str, QueueSource] = {}
        self.served: Callable[[], Iterable[ServedModel]] | None = None
        self.version_states: Callable[[], dict[tuple[str, str], str]] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.is_ready is not None:
            ready = GaugeMetricFamily("cnn_ready", "1 while serving, 0 while starting or draining")
            ready.add_metric([], float(self.is_ready()))
            yield ready
        if self.served is not None:
            info = GaugeMetricFamily(
                "cnn_model_info",
                "served model versions; always 1",
                labels=["model", "version", "architecture", "device", "dtype"],
            )
            for served in self.served():
                facts = served.facts
                labels = [served.name, served.version, facts.card.architecture.name]
                info.add_metric([*labels, facts.device, facts.dtype_name], 1.0)
            yield info
        if self.version_states is not None:
            ready_versions = GaugeMetricFamily(
                "cnn_model_version_ready",
                "1 for a model version that serves; 0 while it loads or unloads, or when it failed "
                "to load (state UNAVAILABLE)",
                labels=["model", "version", "state"],
            )
            for (name, version), state in sorted(self.version_states().items()):
                ready_versions.add_metric([name, version, state], float(state == "READY"))
            yield ready_versions
        if self.queues:
            depth = GaugeMetricFamily(
                "cnn_queue_depth", "images waiting for a batch", labels=["model"]
            )
            for name, queue in self.queues.items():
                depth.add_metric([name], float(queue.queue_depth))
            yield depth


class Metrics:
    """Every family the service exports, on this instance's own registry.

    In one process, `registry` is what a scrape reads. With several processes
    (multiprocess_dir() set) counters, histograms and the in-flight gauge are
    written to files that a scrape sums over every process, and `live` holds what
    only this process can read (readiness, queue depths, activation and GPU gauges).
    """

    def __init__(self, *, max_batch_size: int) -> None:
        self.registry = registry = CollectorRegistry()
        self.live = CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None
        if not self.multiprocess:  # per process: meaningless summed, so single-process only
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self._served: set[str] = set()
        # An HTTP worker's: the engine's live gauges as exposition text, for its scrapes.
        self.remote_live: Callable[[], Awaitable[bytes]] | None = None
        self._gpu_devices: set[str] = set()
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._preprocess_children: dict[str, Histogram] = {}
        self._request_families(registry)
        self._model_families(registry, max_batch_size)
        self._activations = ActivationCollector()
        self._gauges = LiveGauges()
        self.live.register(self._activations)
        self.live.register(self._gauges)
        if not self.multiprocess:
            registry.register(_Forward(self.live))

    def _request_families(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "cnn_requests_total",
            "HTTP requests answered",
            ["model", "endpoint", "code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "cnn_request_duration_seconds",
            "whole request, server side",
            ["model", "endpoint"],
            registry=registry,
            buckets=REQUEST_BUCKETS,
        )
        self.rejected = Counter(
            "cnn_rejected_total",
            "requests refused before inference",
            ["model", "reason"],
            registry=registry,
        )
        self._inflight = Gauge(
            "cnn_inflight_requests",
            "HTTP requests being answered (scrapes excluded)",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def _model_families(self, registry: CollectorRegistry, max_batch_size: int) -> None:
        def histogram(
            name: str, doc: str, labels: list[str], buckets: Sequence[float]
        ) -> Histogram:
            return Histogram(name, doc, labels, registry=registry, buckets=buckets)

        self.preprocess_seconds = histogram(
            "cnn_preprocess_duration_seconds",
            "decode + preprocess, per image",
            ["model"],
            PREPROCESS_BUCKETS,
        )
        self.queue_seconds = histogram(
            "cnn_queue_wait_seconds", "enqueue to batch start", ["model"], QUEUE_BUCKETS
        )
        self.batch_size = histogram(
            "cnn_batch_size", "images per forward pass", ["model"], warm_up_sizes(max_batch_size)
        )
        self.inference_seconds = histogram(
            "cnn_inference_duration_seconds",
            "one forward pass of a batch, device-synchronized",
            ["model", "device"],
            INFERENCE_BUCKETS,
        )
        self.images = Counter(
            "cnn_images_total", "images run through a model", ["model"], registry=registry
        )
        self.batch_errors = Counter(
            "cnn_batch_errors_total",
            "failed batches (oom, error) and requests dropped past their deadline (timeout)",
            ["model", "kind"],
            registry=registry,
        )
        self.model_loads = Counter(
            "cnn_model_loads_total",
            "model versions loaded (outcome: loaded or failed)",
            ["model", "outcome"],
            registry=registry,
        )
        self.model_unloads = Counter(
            "cnn_model_unloads_total", "model versions taken out of service", ["model"],
            registry=registry,
        )  # fmt: skip
        self.model_load_seconds = histogram(
            "cnn_model_load_duration_seconds",
            "loading one model version, its warm-up included",
            ["model"],
            LOAD_BUCKETS,
        )

    # ---- models ----------------------------------------------------------

    def observer(self, model: str) -> ModelObserver:
        """The BatchObserver handed to the model's Batcher."""
        return ModelObserver(self, model)

    def watch_models(
        self,
        served: Callable[[], Iterable[ServedModel]],
        states: Callable[[], dict[tuple[str, str], str]],
    ) -> None:
        """The process holding the models: cnn_model_info and each version's readiness."""
        self._gauges.served = served
        self._gauges.version_states = states

    def model_load(self, name: str, *, ok: bool, seconds: float) -> None:
        self.model_loads.labels(name, "loaded" if ok else "failed").inc()
        self.model_load_seconds.labels(name).observe(seconds)

    def model_unload(self, name: str) -> None:
        self.model_unloads.labels(name).inc()

    def unwatch(self, name: str) -> None:
        """The model has no version left here: its live gauges go."""
        self._activations.unwatch(name)
        self._gauges.queues.pop(name, None)

    def model_loaded(self, served: ServedModel) -> None:
        name, facts = served.name, served.facts
        self._served.add(name)
        self.images.labels(name)
        for kind in BATCH_ERROR_KINDS:
            self.batch_errors.labels(name, kind)
        for reason in REJECTION_REASONS:
            self.rejected.labels(name, reason)
        self.preprocess_seconds.labels(name)
        self.inference_seconds.labels(name, facts.device)

    def watch_activations(self, name: str, monitor: ActivationReader) -> None:
        self._activations.watch(name, monitor)

    def watch_queue(self, name: str, queue: QueueSource) -> None:
        """A model whose queue is in this process (its engine's)."""
        self._gauges.queues[name] = queue

    def watch_gpu(self, device: str) -> None:
        """GPU memory and utilization of a CUDA device a model runs on, read when scraped."""
        if device in self._gpu_devices:
            return
        from service.gpu_metrics import GpuCollector  # torch: only where a model is on a GPU

        self._gpu_devices.add(device)
        self.live.register(GpuCollector(device))

    def served_name(self, name: object) -> str:
        """A model label only for served names: a URL never creates a series."""
        return name if isinstance(name, str) and name in self._served else ""

    def watch_readiness(self, is_ready: Callable[[], bool]) -> None:
        self._gauges.is_ready = is_ready

    def scrape_registry(self, ready: Callable[[], bool] | None = None) -> CollectorRegistry:
        """What one scrape reads: this registry, or every process's values and this one's live
        (with `ready`, a cnn_ready of its own: the engine's metrics port speaks for the pod)."""
        if not self.multiprocess:
            return self.registry
        scraped = CollectorRegistry()
        MultiProcessCollector(scraped)  # type: ignore[no-untyped-call]
        scraped.register(_Forward(self.live))
        if ready is not None:
            readiness = LiveGauges()
            readiness.is_ready = ready
            scraped.register(readiness)
        return scraped

    # ---- requests --------------------------------------------------------

    def request_started(self) -> None:
        self._inflight.inc()

    def request_finished(self) -> None:
        self._inflight.dec()

    def observe_request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        key = (model, endpoint, status)
        children = self._request_children.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: do it once per series
            children = (
                self.requests.labels(model, endpoint, str(status)),
                self.request_seconds.labels(model, endpoint),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_preprocess(self, model: str, seconds_per_image: float, images: int) -> None:
        child = self._preprocess_children.get(model)
        if child is None:
            child = self._preprocess_children[model] = self.preprocess_seconds.labels(model)
        observe_many(child, seconds_per_image, images)

    def count_rejection(self, model: str, reason: str) -> None:
        self.rejected.labels(model, reason).inc()


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """`count` observations of one amount: what as many observe() calls leave (the sum up
    to float rounding), in one step. A request of 64 digits observed its per-image decode
    time 64 times, each a search of the buckets and two locked increments on the event loop.

    prometheus_client's Histogram keeps its sum, bucket bounds and bucket counts in `_sum`,
    `_upper_bounds` and `_buckets` (multiprocess mode too); a version without them, or a
    labelled parent (which has none, and whose observe() raises), gets the calls one by one.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or count < 2:
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    buckets[bisect.bisect_left(bounds, amount)].inc(count)


class ModelObserver:
    """Implements service.batching.BatchObserver for one model."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._batch_size = metrics.batch_size.labels(model)
        self._queue = metrics.queue_seconds.labels(model)
        self._images = metrics.images.labels(model)
        self._inference: dict[str, Histogram] = {}

    def batch_done(
        self, *, size: int, seconds: float, device: str, queue_waits: Sequence[float]
    ) -> None:
        inference = self._inference.get(device)
        if inference is None:
            inference = self._metrics.inference_seconds.labels(self._model, device)
            self._inference[device] = inference
        inference.observe(seconds)
        self._batch_size.observe(size)
        self._images.inc(size)
        for wait in queue_waits:
            self._queue.observe(wait)

    def batch_failed(self, *, kind: str) -> None:
        self._metrics.batch_errors.labels(self._model, kind).inc()


class MetricsExporter:
    """prometheus_client's HTTP server on its own port, in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        self.port = port
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _NoExporter:
    def close(self) -> None:
        pass


def start_exporter(
    registry: CollectorRegistry, *, host: str, port: int | None
) -> MetricsExporter | _NoExporter:
    """Serve the registry on `port` (CNN_METRICS_PORT) when one is set; else nothing."""
    return _NoExporter() if port is None else MetricsExporter(registry, host=host, port=port)


class _Forward(Collector):
    """Another registry's families, collected as part of this one."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()
