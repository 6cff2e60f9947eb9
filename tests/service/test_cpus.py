"""The CPU count the worker default comes from: affinity capped by a cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cpus import (
    SINGLE_PROCESS_CPUS,
    available_cpus,
    default_helpers,
    default_instances,
    default_request_pass,
    default_torch_threads,
    default_workers,
)
from service.settings import Settings


def _v2(root: Path, text: str) -> Path:
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: int, period: int) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("quota", "expected"),
    [
        ("max 100000\n", AFFINITY),  # no limit: the CPUs this process may run on
        ("100000 100000\n", 1),
        ("150000 100000\n", min(AFFINITY, 2)),  # 1.5 CPUs round up
        ("50000 100000\n", 1),  # never below one
    ],
)
def test_cgroup_v2_quota_caps_the_affinity(tmp_path: Path, quota: str, expected: int) -> None:
    assert available_cpus(_v2(tmp_path, quota)) == expected


def test_cgroup_v1_quota_and_no_cgroup_at_all(tmp_path: Path) -> None:
    limited, unlimited = tmp_path / "limited", tmp_path / "unlimited"
    limited.mkdir()
    unlimited.mkdir()
    assert available_cpus(_v1(limited, 100_000, 100_000)) == 1
    assert available_cpus(_v1(unlimited, -1, 100_000)) == AFFINITY  # -1: no quota
    assert available_cpus(tmp_path / "missing") == AFFINITY


def test_one_process_up_to_two_cpus_then_a_worker_per_cpu() -> None:
    assert [default_workers(n) for n in range(1, SINGLE_PROCESS_CPUS + 1)] == [1, 1]
    assert default_workers(3) == 3
    assert default_workers(16) == 16
    assert default_workers(64) == 16  # capped: beyond it the engine, not HTTP, is the limit


LARGE = 1_800_000_000  # resnet18 at 224x224
SMALL = 6_000_000  # the shipped digits model


@pytest.mark.parametrize(
    ("device_type", "cpus", "work", "expected"),
    [
        ("cpu", 1, LARGE, 1),
        ("cpu", 2, LARGE, 2),
        ("cpu", 16, LARGE, 2),
        ("cpu", 16, SMALL, 1),
        ("cuda", 16, LARGE, 1),
    ],
)
def test_two_instances_for_a_large_model_on_a_cpu_engine_with_two_cpus(
    device_type: str, cpus: int, work: int, expected: int
) -> None:
    assert default_instances(device_type, cpus, work) == expected


@pytest.mark.parametrize(
    ("device_type", "cpus", "instances", "expected"),
    [
        ("cpu", 2, 1, 1),  # one torch thread of two CPUs: the other idles under bulk requests
        ("cpu", 1, 1, 0),
        ("cpu", 16, 1, 0),  # 15 torch threads: a second pass would only fight the first
        ("cpu", 2, 2, 0),  # a large model's two instances already overlap
        ("cuda", 2, 1, 0),
    ],
)
def test_a_helper_instance_where_a_lone_cpu_instance_leaves_half_the_cpus_idle(
    device_type: str, cpus: int, instances: int, expected: int
) -> None:
    threads = default_torch_threads(cpus)
    assert default_helpers(device_type, cpus, instances, threads) == expected


def test_torch_takes_every_cpu_but_one_for_the_http_side() -> None:
    assert [default_torch_threads(cpus) for cpus in (1, 2, 3, 16)] == [1, 1, 2, 15]
    # The setting's default follows the CPUs this process may use (quota included).
    assert Settings().torch_threads == default_torch_threads(available_cpus())
    assert Settings().preprocess_workers == available_cpus()


@pytest.mark.parametrize(
    ("device_type", "work", "expected"),
    [("cpu", SMALL, 64), ("cpu", LARGE, 32), ("cuda", SMALL, 32)],
)
def test_a_small_models_requests_run_in_passes_of_twice_the_batch_on_a_cpu(
    device_type: str, work: int, expected: int
) -> None:
    assert default_request_pass(device_type, work, 32) == expected
