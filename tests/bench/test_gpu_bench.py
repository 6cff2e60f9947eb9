"""bench/gpu_bench.py's choices for the GPU run and for its CPU rehearsal, without running it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.gpu_bench import PROFILES, Client, Model, service_env


def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("a CPU rehearsal asked CUDA")

    monkeypatch.setattr(torch.cuda, "get_device_name", refuse)
    monkeypatch.setattr(torch.cuda, "empty_cache", refuse)


def test_the_gpu_run_keeps_its_sizes() -> None:
    cuda = PROFILES["cuda"]
    assert cuda.batches == (32, 64, 128, 256) and cuda.v2_batch == 64


def test_a_cpu_rehearsal_uses_small_batches_two_workers_and_no_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_cuda(monkeypatch)
    cpu = PROFILES["cpu"]
    assert max(cpu.batches) <= 16 and cpu.v2_batch <= 16
    assert cpu.workers() == 2  # the multi-worker path, whatever the cores
    assert cpu.device_name() == "cpu"
    cpu.release_memory()


def test_services_get_the_device_and_the_model_by_its_name() -> None:
    model = Model(Path("/tmp/w/resnet18/resnet18.json"), "resnet18", "cpu")
    env = service_env(model, 16, 2, {"CNN_DEVICE_DECODE": "off"})
    assert (
        env["CNN_DEVICE"] == "cpu" and env["CNN_MODELS"] == "resnet18=/tmp/w/resnet18/resnet18.json"
    )
    assert env["CNN_WORKERS"] == "2" and env["CNN_MAX_BATCH_SIZE"] == "16"
    assert env["CNN_DEVICE_DECODE"] == "off"


def test_warm_ups_shrink_only_below_the_default_points() -> None:
    def client(seconds: float) -> Client:
        return Client("hey", Path("/tmp"), Path("/tmp/p.jpg"), "resnet50", 64, seconds)

    assert client(12.0).warm(5) == 5 and client(30.0).warm(3) == 3
    assert client(2.0).warm(6) == pytest.approx(1.0)
