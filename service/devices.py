"""Which device and which precision a model runs with: pure policy, testable without a GPU."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from models.card import GpuPrecision
from service.errors import DeviceUnavailable
from service.settings import DeviceDecode, Precision


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    precision: Precision  # never "auto": resolved
    channels_last: bool
    pin_memory: bool
    cuda_graphs: bool = False  # replay each warm-up batch size from a CUDA graph
    decodes_jpeg: bool = False  # baseline JPEGs reach the engine encoded (service.jpeg)

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


# CPU features that compute bfloat16 natively (AVX-512 BF16, AMX): oneDNN's bf16 kernels.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, from /proc/cpuinfo; empty where that cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


# Per-image work above which bf16 pays on a CPU with native bf16. Below it, per-operator
# overhead dominates and fp32 (which also runs as a frozen graph) is faster: the 5.5 M
# multiply-add default model stays fp32, resnet18 (1.8 G) goes bf16 with channels_last.
# The measured ratios are in bench/RESULTS.md (W2's precision rows and the ceilings).
BF16_MIN_MULTIPLY_ADDS = 100_000_000


def resolve_precision(
    requested: Precision,
    device: torch.device,
    *,
    cpu_bf16: bool = False,
    multiply_adds: int = 0,
    card_gpu_precision: GpuPrecision | None = None,
) -> Precision:
    if requested != "auto":
        return requested
    if device.type == "cuda":
        # Autocast to fp16, the GPU's fast path, unless the card asks for bf16 (its range).
        return card_gpu_precision or "fp16"
    # bf16 where the CPU computes it natively and the model is big enough to gain from it;
    # top-1 answers agree with fp32 (all 5,000 MNIST digits for the default model).
    return "bf16" if cpu_bf16 and multiply_adds >= BF16_MIN_MULTIPLY_ADDS else "fp32"


def plan_for(
    requested_device: str,
    requested_precision: Precision,
    *,
    multiply_adds: int = 0,
    cuda_graphs: bool = True,
    device_decode: DeviceDecode = "auto",
    card_gpu_precision: GpuPrecision | None = None,
) -> DevicePlan:
    device = resolve_device(
        requested_device,
        cuda_available=torch.cuda.is_available(),
        cuda_count=torch.cuda.device_count(),
    )
    on_gpu = device.type == "cuda"
    precision = resolve_precision(
        requested_precision,
        device,
        cpu_bf16=bool(cpu_flags() & NATIVE_BF16_FLAGS),
        multiply_adds=multiply_adds,
        card_gpu_precision=card_gpu_precision,
    )
    return DevicePlan(
        device=device,
        precision=precision,
        # NHWC is what cuDNN and oneDNN's bf16 convolutions run fastest on.
        channels_last=on_gpu or precision == "bf16",
        pin_memory=on_gpu,
        cuda_graphs=on_gpu and cuda_graphs,
        # nvJPEG decodes a batch faster than the node's cores; on a CPU engine the HTTP
        # workers' cores decode beside the forward pass instead of inside it.
        decodes_jpeg=device_decode == "on" or (device_decode == "auto" and on_gpu),
    )
