"""Prometheus metrics of the real app: exact counts after a known mix of requests."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import models
from service.gpu_metrics import GPU_METRICS, GpuCollector, GpuReading
from tests.conftest import AppClientFactory
from tests.helpers import Digits, free_port, running_server

PNG = {"content-type": "image/png"}
MODEL = "mnist-cnn"
NAMED = "/v1/models/{name}/classify"
DEFAULT = "/v1/classify"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# The families the service promises, with exactly these label names.
FAMILIES = {
    "cnn_requests_total": {"model", "endpoint", "code"},
    "cnn_request_duration_seconds_count": {"model", "endpoint"},
    "cnn_preprocess_duration_seconds_count": {"model"},
    "cnn_queue_wait_seconds_count": {"model"},
    "cnn_batch_size_count": {"model"},
    "cnn_inference_duration_seconds_count": {"model", "device"},
    "cnn_queue_depth": {"model"},
    "cnn_inflight_requests": set(),
    "cnn_images_total": {"model"},
    "cnn_batch_errors_total": {"model", "kind"},
    "cnn_rejected_total": {"model", "reason"},
    "cnn_model_info": {"model", "version", "architecture", "device", "dtype"},
    "cnn_ready": set(),
    "process_resident_memory_bytes": set(),
    "process_cpu_seconds_total": set(),
    "process_open_fds": set(),
}


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def _drive_known_mix(
    client: httpx.AsyncClient, digits: Digits
) -> collections.Counter[tuple[str, str, str]]:
    """Send a known set of requests; return the expected count per (model, endpoint, code)."""
    expected: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def note(model: str, endpoint: str, response: httpx.Response, status: int) -> None:
        assert response.status_code == status, response.text
        expected[(model, endpoint, str(status))] += 1

    concurrent = await asyncio.gather(
        *(client.post(f"/v1/models/{MODEL}/classify", content=digits.png(i), headers=PNG)
          for i in range(32))
    )  # fmt: skip
    for response in concurrent:
        note(MODEL, NAMED, response, 200)
    for i in range(3):
        note(MODEL, DEFAULT, await client.post(DEFAULT, content=digits.png(i), headers=PNG), 200)
    four = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(4)]
    note(MODEL, DEFAULT, await client.post(DEFAULT, files=four), 200)
    for _ in range(2):
        note(MODEL, DEFAULT, await client.post(DEFAULT, content=b"not an image", headers=PNG), 400)
    nine = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(9)]
    note(MODEL, DEFAULT, await client.post(DEFAULT, files=nine), 413)  # too many images
    # Refused by the body limit before routing: still labelled with its route template.
    note("", DEFAULT, await client.post(DEFAULT, content=b"x" * 70_000, headers=PNG), 413)
    for _ in range(2):
        note(
            "", NAMED, await client.post("/v1/models/nope/classify", content=b"", headers=PNG), 404
        )
    note("", "unmatched", await client.get("/no/such/page/12345"), 404)
    note("", "unmatched", await client.get("/another/unknown"), 404)
    note(MODEL, "/v1/models/{name}", await client.get(f"/v1/models/{MODEL}"), 200)
    note("", "/healthz", await client.get("/healthz"), 200)
    return expected


async def test_scraped_metrics_hold_exact_counts(
    app_client: AppClientFactory, digits: Digits
) -> None:
    settings = {"max_batch_delay_ms": 200, "max_images_per_request": 8, "max_body_bytes": 65536}
    async with app_client(**settings) as client:
        expected = await _drive_known_mix(client, digits)
        scrape = await client.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    samples = parse(scrape.text)

    requests = series(samples, "cnn_requests_total")
    as_keys = {
        (dict(labels)["model"], dict(labels)["endpoint"], dict(labels)["code"]): int(count)
        for labels, count in requests.items()
    }
    assert as_keys == dict(expected)
    by_route: collections.Counter[tuple[str, str]] = collections.Counter()
    for (model, endpoint, _), count in expected.items():
        by_route[(model, endpoint)] += count
    for (model, endpoint), count in by_route.items():
        durations = value(
            samples, "cnn_request_duration_seconds_count", model=model, endpoint=endpoint
        )
        assert durations == count

    images = 32 + 3 + 4  # the answered ones; refused and undecodable images never ran
    items = 32 + 3 + 1  # one queue entry per request
    assert value(samples, "cnn_images_total", model=MODEL) == images
    assert value(samples, "cnn_preprocess_duration_seconds_count", model=MODEL) == images
    assert value(samples, "cnn_batch_size_sum", model=MODEL) == images
    assert value(samples, "cnn_queue_wait_seconds_count", model=MODEL) == items
    batches = value(samples, "cnn_batch_size_count", model=MODEL)
    singles = value(samples, "cnn_batch_size_bucket", model=MODEL, le="1.0")
    assert batches - singles >= 1, "concurrent requests never shared a batch"
    assert batches < items
    forward = value(samples, "cnn_inference_duration_seconds_count", model=MODEL, device="cpu")
    assert forward == batches
    assert value(samples, "cnn_rejected_total", model=MODEL, reason="too_large") == 1
    assert value(samples, "cnn_rejected_total", model="", reason="too_large") == 1
    assert value(samples, "cnn_rejected_total", model=MODEL, reason="queue_full") == 0
    for kind in ("oom", "error", "timeout"):
        assert value(samples, "cnn_batch_errors_total", model=MODEL, kind=kind) == 0
    assert value(samples, "cnn_queue_depth", model=MODEL) == 0
    assert value(samples, "cnn_inflight_requests") == 0
    assert value(samples, "cnn_ready") == 1
    card = models.load(models.default_model_path()).card
    info = {"model": MODEL, "version": card.version, "architecture": card.architecture.name}
    assert value(samples, "cnn_model_info", **info, device="cpu", dtype="float32") == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    _assert_families(samples)


def _assert_families(samples: Samples) -> None:
    for name, labels in FAMILIES.items():
        label_sets = {frozenset(k for k, _ in key) for key in series(samples, name)}
        assert label_sets == {frozenset(labels)}, name


async def test_queue_full_refusals_are_counted(
    app_client: AppClientFactory, digits: Digits
) -> None:
    # The worker holds the first batch open while others decode, so the queue of 2 fills.
    async with app_client(max_queue_size=2, max_batch_delay_ms=500) as client:
        responses = await asyncio.gather(
            *(client.post(DEFAULT, content=digits.png(i), headers=PNG) for i in range(12))
        )
        samples = parse((await client.get("/metrics")).text)
    refused = [r for r in responses if r.status_code == 503]
    assert refused and all(r.json()["code"] == "overloaded" for r in refused)
    assert len(refused) + sum(r.status_code == 200 for r in responses) == 12
    assert value(samples, "cnn_rejected_total", model=MODEL, reason="queue_full") == len(refused)
    assert value(samples, "cnn_requests_total", model=MODEL, endpoint=DEFAULT, code="503") == len(
        refused
    )
    assert value(samples, "cnn_images_total", model=MODEL) == 12 - len(refused)


async def test_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    assert "cnn_ready 1.0" in response.text


async def test_separate_metrics_port_in_process(
    app_client: AppClientFactory, digits: Digits
) -> None:
    port = free_port()
    async with app_client(host="127.0.0.1", metrics_port=port) as client:
        assert (await client.get("/metrics")).status_code == 404  # not on the main port
        await client.post(DEFAULT, content=digits.png(0), headers=PNG)
        async with httpx.AsyncClient() as outside:
            text = (await outside.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = parse(text)
    assert value(samples, "cnn_requests_total", model=MODEL, endpoint=DEFAULT, code="200") == 1
    assert value(samples, "cnn_requests_total", model="", endpoint="unmatched", code="404") == 1
    async with httpx.AsyncClient() as outside:
        with pytest.raises(httpx.ConnectError):  # stopped with the app
            await outside.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


@pytest.mark.slow
def test_separate_metrics_port_in_a_real_process(tmp_path: Path, digits: Digits) -> None:
    port = free_port()
    with running_server(
        tmp_path, env={"CNN_METRICS_PORT": str(port), "CNN_SHUTDOWN_DRAIN_S": "0"}
    ) as server:
        ok = httpx.post(f"{server.base_url}/v1/classify", content=digits.png(7), headers=PNG)
        assert ok.status_code == 200
        assert httpx.get(f"{server.base_url}/metrics").status_code == 404
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics")
    samples = parse(scrape.text)
    assert value(samples, "cnn_requests_total", model=MODEL, endpoint=DEFAULT, code="200") == 1
    assert value(samples, "cnn_images_total", model=MODEL) == 1
    assert value(samples, "cnn_ready") == 1
    assert value(samples, "process_open_fds") > 0


def test_gpu_collector_reports_each_device() -> None:
    readings = {
        0: GpuReading(
            allocated_bytes=1024.0, reserved_bytes=4096.0, utilization=0.25, total_bytes=8e10
        ),
        1: GpuReading(allocated_bytes=2048.0, reserved_bytes=8192.0, utilization=None),
    }
    collector = GpuCollector(read=lambda device: readings[device.index])
    collector.devices += [torch.device("cuda", 0), torch.device("cuda", 1)]
    registry = CollectorRegistry()
    registry.register(collector)
    samples = parse(generate_latest(registry).decode())
    assert series(samples, GPU_METRICS[0]) == {
        frozenset({("device", "cuda:0")}): 1024.0,
        frozenset({("device", "cuda:1")}): 2048.0,
    }
    assert value(samples, GPU_METRICS[1], device="cuda:1") == 8192.0
    # NVML answered for one device only: utilization for that one, none invented.
    assert series(samples, GPU_METRICS[2]) == {frozenset({("device", "cuda:0")}): 0.25}
    # The same for the total: where it is unknown, no series.
    assert series(samples, GPU_METRICS[3]) == {frozenset({("device", "cuda:0")}): 8e10}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
async def test_gpu_gauges_on_cuda(app_client: AppClientFactory, digits: Digits) -> None:
    async with app_client(device="cuda:0") as client:
        ok = await client.post(DEFAULT, content=digits.png(0), headers=PNG)
        assert ok.status_code == 200
        samples = parse((await client.get("/metrics")).text)
    allocated = value(samples, GPU_METRICS[0], device="cuda:0")
    assert 0 < allocated <= value(samples, GPU_METRICS[1], device="cuda:0")
    total = torch.cuda.get_device_properties(0).total_memory
    assert value(samples, GPU_METRICS[3], device="cuda:0") == total
    assert value(samples, "cnn_inference_duration_seconds_count", model=MODEL, device="cuda:0") == 1


@pytest.mark.parametrize("amount", [0.0, 1e-6, 2.5e-5, 3e-4, 0.75, 2.0, 1e9])
def test_observing_many_at_once_leaves_what_observing_one_by_one_leaves(amount: float) -> None:
    """Counts and buckets exactly, the sum to rounding; a bound itself falls in its bucket."""
    from prometheus_client import Histogram

    from service.metrics import observe_many

    def samples(observe: Callable[[Histogram], None]) -> dict[str, float]:
        registry = CollectorRegistry()
        parent = Histogram("d", "d", ["model"], buckets=(2.5e-5, 3e-4, 1.0), registry=registry)
        observe(parent.labels("m"))
        return {
            f"{s.name}{sorted(s.labels.items())}": s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    def one_by_one(child: Histogram) -> None:
        for _ in range(64):
            child.observe(amount)

    singly = samples(one_by_one)
    together = samples(lambda child: observe_many(child, amount, 64))
    sums = [name for name in singly if name.startswith("d_sum")]
    assert together.pop(sums[0]) == pytest.approx(singly.pop(sums[0]), rel=1e-12)
    assert together == singly
    assert singly["d_count[('model', 'm')]"] == 64
