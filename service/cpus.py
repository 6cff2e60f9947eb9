"""How many CPUs this process may use: its affinity, capped by a cgroup CPU quota.

In a container with `resources.limits.cpu: 2` on a 16-core node, os.cpu_count()
says 16 while the quota allows 2: sizing by the former would start 16 HTTP
workers that the kernel throttles. cgroup v2 (`cpu.max`) and v1
(`cpu.cfs_quota_us` / `cpu.cfs_period_us`) are both read; a fractional quota
rounds up (1.5 CPUs: 2).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
MAX_DEFAULT_WORKERS = 16


def _quota(root: Path) -> float | None:
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period_us
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = CGROUP) -> int:
    affinity = len(os.sched_getaffinity(0))
    quota = _quota(root)
    return max(1, min(affinity, math.ceil(quota))) if quota else max(1, affinity)


def default_torch_threads(cpus: int) -> int:
    """Every CPU but one for the forward passes: the other is the HTTP side's (the event
    loop, the decoding threads), which a full-width intra-op pool would fight for.

    On 2 cores (bench/RESULTS.md) one torch thread instead of two gave the digits model
    +7% req/s at 64 concurrent single images and +8% img/s at 64 images per request, at
    7% less CPU per request, and resnet18 (two instances) +2% img/s at 32 photos.
    """
    return max(1, cpus - 1)


# Up to this many CPUs one process serves best (bench/RESULTS.md, 2 cores: one process
# answered 3,170 req/s at c=64 where two HTTP workers and the engine answered 2,495).
SINGLE_PROCESS_CPUS = 2


def default_workers(cpus: int) -> int:
    """One process on up to two CPUs; beyond, one HTTP worker per CPU beside the engine.

    On two cores one process already keeps both busy (its event loop on one, the
    forward passes and decoding threads on the other) and pays no hand-off between
    processes; the HTTP workers are for the cores a single event loop cannot use.
    """
    return 1 if cpus <= SINGLE_PROCESS_CPUS else min(cpus, MAX_DEFAULT_WORKERS)


# Two instances pay off on a CPU for models of at least this many multiply-adds per image
# (bench/RESULTS.md, 2 cores: resnet18, 1.8 G, +18% img/s at 32 concurrent photos); for a
# small one (the shipped digits model, 6 M) the batches split between two instances cost
# more than the overlap gains (W1 at 64 concurrent digits: -17% req/s, p99 up by half).
LARGE_MODEL_MULTIPLY_ADDS = 100_000_000
CPU_INSTANCES = 2


def default_instances(device_type: str, cpus: int, multiply_adds: int) -> int:
    """Two model instances for a large model on a CPU engine with two CPUs or more, else one.

    A large model's batches are best small on a CPU (resnet18 runs fastest at 8 images),
    and while one instance runs its forward pass the other gathers and runs the next. On
    a GPU the device, not the host, sets the pace: one instance.
    """
    large = multiply_adds >= LARGE_MODEL_MULTIPLY_ADDS
    return CPU_INSTANCES if device_type == "cpu" and cpus >= CPU_INSTANCES and large else 1


def default_request_pass(device_type: str, multiply_adds: int, max_batch_size: int) -> int:
    """Images of one request per forward pass: twice the batch size for a small model on a CPU.

    Batches gathered from many requests stay at the max batch size (larger ones bunch the
    answers: single digits at 64 concurrent clients -12% req/s with batches of 64), but a
    request's own images are ready together and answered together. For the digits model
    each pass also costs a GIL wait and the batcher's bookkeeping: 64 digits a request ran
    +6% req/s as one pass than as two (2 cores, c=8). A large model's passes are long and
    its two instances run a request's halves side by side.
    """
    small = multiply_adds < LARGE_MODEL_MULTIPLY_ADDS
    return 2 * max_batch_size if device_type == "cpu" and small else max_batch_size


def default_helpers(device_type: str, cpus: int, instances: int, torch_threads: int) -> int:
    """One helper instance (service.batching) where a lone CPU instance leaves CPUs idle.

    With the forward passes on fewer threads than half the CPUs (one of two), the rest
    is the HTTP side's; when requests carry many images each, that side idles while the
    forward pass sets the pace, and a helper runs a second one beside it.
    """
    lone = device_type == "cpu" and instances == 1
    return 1 if lone and cpus >= 2 * torch_threads else 0
