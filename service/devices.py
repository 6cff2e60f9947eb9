"""Which device and which precision a model runs with: pure policy, testable without a GPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from service.settings import Precision


class DeviceUnavailable(Exception):
    """The configured device does not exist on this machine."""


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    precision: Precision  # never "auto": resolved
    channels_last: bool
    pin_memory: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    @property
    def dtype_name(self) -> str:
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.precision]


def resolve_device(requested: str, *, cuda_available: bool, cuda_count: int) -> torch.device:
    if requested == "auto":
        return torch.device("cuda:0" if cuda_available else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    index = int(requested.partition(":")[2] or 0)
    if not cuda_available:
        raise DeviceUnavailable(f"device: {requested!r} requested but CUDA is not available")
    if index >= cuda_count:
        raise DeviceUnavailable(
            f"device: {requested!r} requested but only {cuda_count} CUDA device(s)"
        )
    return torch.device("cuda", index)


def resolve_precision(requested: Precision, device: torch.device) -> Precision:
    if requested != "auto":
        return requested
    # fp16 autocast is the GPU's fast path; on the CPU fp32 is the accurate default.
    return "fp16" if device.type == "cuda" else "fp32"


def plan_for(requested_device: str, requested_precision: Precision) -> DevicePlan:
    device = resolve_device(
        requested_device,
        cuda_available=torch.cuda.is_available(),
        cuda_count=torch.cuda.device_count(),
    )
    on_gpu = device.type == "cuda"
    return DevicePlan(
        device=device,
        precision=resolve_precision(requested_precision, device),
        channels_last=on_gpu,
        pin_memory=on_gpu,
    )
