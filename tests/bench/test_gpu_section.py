"""The GPU section of RESULTS.md from gpu-results.json and decode-parity.json, either missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.gpu_section import gpu_section, load_gpu_results

BENCH = {
    "device": "NVIDIA H100",
    "inprocess_img_s": 4000.0,
    "inprocess_batch": 128,
    "service_batch_img_s": 3200.0,
    "service_jpeg_img_s": 2500.0,
    "service_jpeg_cpu_decode_img_s": 2000.0,
    "jpeg_device_decode_ratio": 1.25,
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


def test_both_files_give_the_decode_off_row_its_ratio_and_the_parity(tmp_path: Path) -> None:
    _write(tmp_path, "gpu-results.json", BENCH)
    _write(tmp_path, "decode-parity.json", PARITY)
    text = gpu_section(load_gpu_results(tmp_path / "gpu-results.json"))
    assert "| service, one JPEG per request, c=128 | 2,500 |  |" in text
    assert "decoded in the HTTP workers (CNN_DEVICE_DECODE=off) | 2,000 |  |" in text
    assert "workers (off): 1.25x." in text
    assert "bench/decode_parity.py on NVIDIA H100" in text
    assert "resnet50 3x224x224, random init with BatchNorm statistics from the photos" in text
    assert "by 0.032 uint8 levels on average, 0.166 for the" in text
    assert "0.9917 (below 0.995; 7 distinct classes" in text
    assert "fp16 autocast on cuda 0.9875, bf16 autocast on cuda 0.9583." in text


def test_without_decode_parity_the_benchmark_alone(tmp_path: Path) -> None:
    _write(tmp_path, "gpu-results.json", {"device": "A100", "service_jpeg_img_s": 900.0})
    text = gpu_section(load_gpu_results(tmp_path / "gpu-results.json"))
    assert "Card: A100;" in text
    assert "(CNN_DEVICE_DECODE=off) | n/a |  |" in text
    assert "Device-decode parity" not in text and "workers (off)" not in text


def test_decode_parity_alone_still_shows(tmp_path: Path) -> None:
    _write(tmp_path, "decode-parity.json", {**PARITY, "precision_agreement": []})
    text = gpu_section(load_gpu_results(tmp_path / "gpu-results.json"))
    assert "Card: NVIDIA H100;" in text
    assert "| in-process, best batch | n/a |  |" in text
    assert "Reduced precision" in text and "not measured." in text


def test_neither_file_says_not_measured(tmp_path: Path) -> None:
    assert load_gpu_results(tmp_path / "gpu-results.json") is None
    assert "Not measured in this run" in gpu_section(None)
