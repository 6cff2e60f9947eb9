"""The GPU section of RESULTS.md from gpu-results.json and decode-parity.json, either missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.gpu_section import gpu_section, load_gpu_results

BENCH: dict[str, Any] = {
    "device": "NVIDIA H100",
    "workers": 14,
    "inprocess_img_s": 8000.0,
    "inprocess_batch": 128,
    "service_batch_img_s": 6720.0,
    "batch_request": "V2 binary UINT8 [64,3,224,224], c=16",
    "service_batch": {"req_s": 105.0, "p50_ms": 150.25, "p99_ms": 190.0, "failed": 0},
    "service_v2_c128_img_s": 5100.0,
    "v2_c128_request": "V2 binary UINT8 [1,3,224,224], c=128",
    "service_v2_c128": {"req_s": 5100.0, "p50_ms": 24.0, "p99_ms": 61.5, "failed": 0},
    "service_jpeg_img_s": 4200.0,
    "jpeg_request": "china427x640.jpg, c=128",
    "service_jpeg": {"req_s": 4200.0, "p50_ms": 30.0, "p99_ms": 45.0, "failed": 0},
    "service_jpeg_cpu_decode_img_s": 3000.0,
    "service_jpeg_cpu_decode": {"req_s": 3000.0, "p50_ms": 41.0, "p99_ms": 80.0, "failed": 0},
    "jpeg_device_decode_ratio": 1.4,
    "service_jpeg_c1_img_s": 250.0,
    "jpeg_c1_request": "china427x640.jpg, c=1",
    "service_jpeg_c1": {"req_s": 250.0, "p50_ms": 3.96, "p99_ms": 6.5, "failed": 0},
    "cold_start_s": 18.25,
    "cold_starts_s": {
        "14 HTTP workers": 18.25,
        "14 HTTP workers, CNN_DEVICE_DECODE=off": 17.5,
        "one process": 12.0,
    },
    "gpu_processes": {"workers": 14, "processes": [[4242, 1530]], "other_processes": [[7, 600]]},
    "single_process": {
        "service_batch_img_s": 5000.0,
        "service_batch": {"req_s": 78.125, "p50_ms": 200.0, "p99_ms": 260.0, "failed": 0},
        "service_jpeg_img_s": 1500.0,
        "service_jpeg": {"req_s": 1500.0, "p50_ms": 85.0, "p99_ms": 120.0, "failed": 0},
        "cold_start_s": 12.0,
        "gpu_processes": {"workers": 1, "processes": [[5151, 1490]], "other_processes": []},
    },
}
PARITY: dict[str, Any] = {
    "device": "NVIDIA H100",
    "images": 240,
    "device_decodable": 240,
    "random_init": True,
    "model": {"architecture": "resnet50", "input": "3x224x224", "batchnorm_from_photos": True},
    "pixels": {"mean_abs_diff": 0.0321, "max_image_mean_abs_diff": 0.166, "max_abs_diff": 3},
    "top1_agreement": 0.9917,
    "top1_agreement_ok": False,
    "top1_agreement_threshold": 0.995,
    "top1_distinct_classes": 7,
    "precision_agreement": [
        {"precision": "fp16 autocast", "device": "cuda", "top1_agreement": 0.9875},
        {"precision": "bf16 autocast", "device": "cuda", "top1_agreement": 0.9583},
    ],
}


def _write(folder: Path, name: str, data: dict[str, Any]) -> None:
    (folder / name).write_text(json.dumps(data))


def test_both_files_give_every_point_the_goals_and_the_parity(tmp_path: Path) -> None:
    _write(tmp_path, "gpu-results.json", BENCH)
    _write(tmp_path, "decode-parity.json", PARITY)
    text = gpu_section(load_gpu_results(tmp_path / "gpu-results.json"))
    assert "Card: NVIDIA H100; " in text and "; 14 HTTP workers." in text
    assert "| in-process, best batch | 8,000 | batch 128 |  |  |" in text
    assert "| 6,720 | V2 binary UINT8 [64,3,224,224], c=16 | 150.2 | 190.0 |" in text
    assert "| 5,100 | V2 binary UINT8 [1,3,224,224], c=128 | 24.0 | 61.5 |" in text
    assert "| 4,200 | china427x640.jpg, c=128 | 30.0 | 45.0 |" in text
    assert "(CNN_DEVICE_DECODE=off) | 3,000 |  | 41.0 | 80.0 |" in text
    assert "| 250 | china427x640.jpg, c=1 | 4.0 | 6.5 |" in text
    assert "V2 binary batches | 5,000 | as above | 200.0 | 260.0 |" in text
    assert "one JPEG per request | 1,500 | as above, c=128 | 85.0 | 120.0 |" in text
    # Each goal beside its figure: 6,720 / 8,000 = 0.84x.
    assert "service over in-process >= 0.8x | 0.84x | met |" in text
    assert "| V2 binary batches: >= 6,127 img/s | 6,720 img/s | met |" in text
    assert "| V2 binary at c=128: p99 <= 50.0 ms | 61.5 ms | missed |" in text
    assert "at c=128: >= 4,000 img/s | 4,200 img/s | met |" in text
    assert "over CNN_DEVICE_DECODE=off: >= 1.5x | 1.40x | missed |" in text
    assert "| one JPEG at c=1: p50 <= 5.0 ms | 4.0 ms | met |" in text
    assert (
        "| 14 HTTP workers: 1 process, 1,530 MiB; one process: 1 process, 1,490 MiB | met |" in text
    )
    assert "under 30 s | 18.2 s | met |" in text
    assert (
        "Every start to /readyz: 14 HTTP workers: 18.2 s; "
        "14 HTTP workers, CNN_DEVICE_DECODE=off: 17.5 s; one process: 12.0 s." in text
    )
    assert "5,411 img/s): 1.24x." in text  # the V2 batches over Triton's A100 figure
    assert "bench/decode_parity.py on NVIDIA H100" in text
    assert "resnet50 3x224x224, random init with BatchNorm statistics from the photos" in text
    assert "by 0.032 uint8 levels on average, 0.166 for the" in text
    assert "0.9917 (below 0.995; 7 distinct classes" in text
    assert "fp16 autocast on cuda 0.9875, bf16 autocast on cuda 0.9583." in text


def test_gpu_memory_in_two_processes_is_missed_and_unlisted_is_not_judged() -> None:
    two = {"workers": 14, "processes": [[1, 700], [2, 700]], "other_processes": []}
    unlisted = {"workers": 1, "processes": [], "other_processes": [[9, 1400]]}
    text = gpu_section(
        {**BENCH, "gpu_processes": two, "single_process": {"gpu_processes": unlisted}}
    )
    assert (
        "| 14 HTTP workers: 2 processes, 1,400 MiB; "
        "one process: none of its processes listed (1 other) | missed |" in text
    )
    absent = {"workers": 14, "processes": None, "other_processes": None}
    text = gpu_section({"gpu_processes": absent, "single_process": {"gpu_processes": unlisted}})
    assert (
        "| 14 HTTP workers: nvidia-smi not available; "
        "one process: none of its processes listed (1 other) | n/a |" in text
    )


def test_a_run_without_the_new_figures_says_n_a_for_each_goal() -> None:
    old = {key: BENCH[key] for key in ("device", "inprocess_img_s", "service_batch_img_s")}
    text = gpu_section(old)
    assert "service over in-process >= 0.8x | 0.84x | met |" in text
    assert "| V2 binary at c=128: p99 <= 50.0 ms | n/a | n/a |" in text
    assert "over CNN_DEVICE_DECODE=off: >= 1.5x | n/a | n/a |" in text
    assert "holds GPU memory (nvidia-smi, after the load) | n/a | n/a |" in text
    assert "under 30 s | n/a | n/a |" in text and "Every start to /readyz: n/a." in text
    assert "| service, one JPEG per request | n/a | n/a | n/a | n/a |" in text
    assert "; n/a HTTP workers." in text


def test_without_decode_parity_the_benchmark_alone(tmp_path: Path) -> None:
    _write(tmp_path, "gpu-results.json", {"device": "A100", "service_jpeg_img_s": 900.0})
    text = gpu_section(load_gpu_results(tmp_path / "gpu-results.json"))
    assert "Card: A100;" in text
    assert "| service, one JPEG per request | 900 | n/a | n/a | n/a |" in text
    assert "(CNN_DEVICE_DECODE=off) | n/a |  | n/a | n/a |" in text
    assert "Device-decode parity" not in text and "Triton" not in text


def test_decode_parity_alone_still_shows(tmp_path: Path) -> None:
    _write(tmp_path, "decode-parity.json", {**PARITY, "precision_agreement": []})
    text = gpu_section(load_gpu_results(tmp_path / "gpu-results.json"))
    assert "Card: NVIDIA H100;" in text
    assert "| in-process, best batch | n/a |  |  |  |" in text
    assert "Reduced precision" in text and "not measured." in text


def test_neither_file_says_not_measured(tmp_path: Path) -> None:
    assert load_gpu_results(tmp_path / "gpu-results.json") is None
    assert "Not measured in this run" in gpu_section(None)


REHEARSAL: dict[str, Any] = {**BENCH, "device": "cpu", "device_type": "cpu", "arch": "resnet18"}


def test_a_gpu_run_names_its_model_and_no_rehearsal() -> None:
    text = gpu_section(BENCH)  # no "arch": runs before it served resnet50 alone
    assert "model resnet50 (random init) 224x224" in text
    assert "rehearsal" not in text


def test_a_cpu_rehearsal_says_so_and_judges_no_goal() -> None:
    text = gpu_section(REHEARSAL)
    assert "A CPU rehearsal, not GPU figures" in text
    assert "Card: cpu; " in text and "model resnet18 (random init) 224x224" in text
    assert "| 6,720 | V2 binary UINT8 [64,3,224,224], c=16 | 150.2 | 190.0 |" in text
    assert "service over in-process >= 0.8x | 0.84x | not judged |" in text
    assert "under 30 s | 18.2 s | not judged |" in text
    assert "| met |" not in text and "| missed |" not in text
    assert "Triton" not in text
    # Older files without "device_type" are read by their device's name.
    assert "not judged" in gpu_section({**BENCH, "device": "cpu"})


def test_a_cpu_rehearsal_stays_out_of_results_md(tmp_path: Path) -> None:
    _write(tmp_path, "gpu-results.json", REHEARSAL)
    assert load_gpu_results(tmp_path / "gpu-results.json") is None
    assert "Not measured in this run" in gpu_section(None)
    _write(tmp_path, "decode-parity.json", PARITY)  # a GPU's parity report still shows alone
    alone = load_gpu_results(tmp_path / "gpu-results.json")
    assert alone is not None and "inprocess_img_s" not in alone and "decode_parity" in alone
    shown = load_gpu_results(tmp_path / "gpu-results.json", rehearsal=True)
    assert shown is not None and shown["device_type"] == "cpu"
