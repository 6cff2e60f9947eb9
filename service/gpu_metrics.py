"""GPU memory (held and in all) and utilization gauges, read from torch (and NVML) when scraped."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

GPU_METRICS = (
    "cnn_gpu_memory_allocated_bytes",
    "cnn_gpu_memory_reserved_bytes",
    "cnn_gpu_utilization_ratio",
    "cnn_gpu_memory_total_bytes",
)


@dataclass(frozen=True)
class GpuReading:
    allocated_bytes: float
    reserved_bytes: float
    utilization: float | None  # 0..1; None where NVML is not available
    total_bytes: float = 0.0  # the device's memory; 0: unknown


def read_cuda(device: torch.device, *, nvml: bool) -> GpuReading:
    utilization = None
    if nvml:
        try:  # NVML can be importable yet unusable (no driver access in a container)
            utilization = torch.cuda.utilization(device) / 100.0
        except Exception:
            utilization = None
    return GpuReading(
        allocated_bytes=float(torch.cuda.memory_allocated(device)),
        reserved_bytes=float(torch.cuda.memory_reserved(device)),
        utilization=utilization,
        total_bytes=float(torch.cuda.get_device_properties(device).total_memory),
    )


class GpuCollector(Collector):
    """GPU memory (and utilization where NVML answers), read when scraped."""

    def __init__(
        self, *devices: str, read: Callable[[torch.device], GpuReading] | None = None
    ) -> None:
        # torch.cuda.utilization asks NVML through pynvml (nvidia-ml-py), when installed.
        nvml = importlib.util.find_spec("pynvml") is not None
        self._read = read or functools.partial(read_cuda, nvml=nvml)
        self.devices = [torch.device(device) for device in devices]

    def collect(self) -> Iterable[Metric]:
        allocated, reserved, utilization = (
            GaugeMetricFamily(GPU_METRICS[0], "bytes held by tensors", labels=["device"]),
            GaugeMetricFamily(
                GPU_METRICS[1], "bytes held by the caching allocator", labels=["device"]
            ),
            GaugeMetricFamily(GPU_METRICS[2], "GPU busy fraction (NVML), 0..1", labels=["device"]),
        )
        total = GaugeMetricFamily(GPU_METRICS[3], "the device's memory", labels=["device"])
        seen_utilization = False
        for device in self.devices:
            reading = self._read(device)
            allocated.add_metric([str(device)], reading.allocated_bytes)
            reserved.add_metric([str(device)], reading.reserved_bytes)
            if reading.total_bytes:
                total.add_metric([str(device)], reading.total_bytes)
            if reading.utilization is not None:
                utilization.add_metric([str(device)], reading.utilization)
                seen_utilization = True
        yield allocated
        yield reserved
        yield total
        if seen_utilization:
            yield utilization
