"""bench/decode_parity.py on the CPU: a small varied set of photos, resnet18 with random weights.

On a CPU torchvision's decode_jpeg runs libjpeg-turbo, so the report's "device" path is the
same tensor code a GPU runs after nvJPEG; its figures here are the CPU's.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import torch
from PIL import Image

from bench.decode_parity import main, photographs, pick_device
from bench.gpu_section import parity_paragraph
from service.device_decode import device_decodable, jpeg_header

IMAGES = 26  # two cycles of the 13 variants: grey, EXIF 6 and EXIF 3 twice each


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("decode-parity")
    argv = ["--out", str(folder / "out"), "--device", "cpu", "--images", str(IMAGES)]
    argv += ["--arch", "resnet18", "--work", str(folder / "work"), "--batch", "16"]
    assert main(argv) == 0
    # Only the report: the packed weights (large, not results) went to --work.
    assert [f.name for f in (folder / "out").iterdir()] == ["decode-parity.json"]
    data: dict[str, Any] = json.loads((folder / "out" / "decode-parity.json").read_text())
    return data


def test_the_set_is_varied_baseline_jpegs_and_the_same_for_a_seed() -> None:
    photos = photographs(IMAGES, seed=3)
    assert [p.data for p in photos] == [p.data for p in photographs(IMAGES, seed=3)]
    assert all(device_decodable(p.data) for p in photos)
    headers = [jpeg_header(p.data) for p in photos]
    assert {h.components for h in headers if h is not None} == {1, 3}  # grey and colour
    assert min(min(p.width, p.height) for p in photos) < 224  # the resize upscales some
    assert any(p.height > p.width for p in photos) and any(p.width > p.height for p in photos)
    turned = next(p for p in photos if p.variant == "exif6")
    opened = Image.open(io.BytesIO(turned.data))
    assert opened.getexif()[0x0112] == 6 and opened.size == (turned.width, turned.height)


def test_the_report_covers_every_photo_and_variant(report: dict[str, Any]) -> None:
    assert report["device"] == "cpu" and report["device_type"] == "cpu"
    assert report["images"] == IMAGES
    assert report["device_decodable"] == IMAGES
    described = report["image_set"]
    assert described["variants"] == {"colour": 20, "grey": 2, "exif6": 2, "exif3": 2}
    assert described["subsampling"] == [0, 1, 2]
    assert described["short_side_under_224"] > 0
    assert described["portrait"] > 0 and described["landscape"] > 0
    model = report["model"]
    assert model["architecture"] == "resnet18" and model["input"] == "3x224x224"
    assert model["classes"] == 1000
    assert model["batchnorm_from_photos"] is True


def test_device_pixels_are_within_a_level_of_the_pil_path(report: dict[str, Any]) -> None:
    pixels = report["pixels"]
    assert 0.0 < pixels["mean_abs_diff"] < 1.0  # the decoders round differently, a little
    assert pixels["mean_abs_diff"] <= pixels["max_image_mean_abs_diff"] < 2.0
    assert 0 < pixels["max_abs_diff"] <= 255
    assert pixels["p99_abs_diff"] <= 12
    assert pixels["worst_image"].split()[0] in ("china.jpg", "flower.jpg")


def test_top1_agreement_is_measured_for_decoding_and_for_bf16(report: dict[str, Any]) -> None:
    agreement = report["top1_agreement"]
    assert 0.0 <= agreement <= 1.0
    assert report["top1_agreement_ok"] == (agreement >= 0.995)
    assert report["top1_agreement_of"].startswith("fp32 on cpu")
    # BatchNorm statistics from the photos: the random network answers more than one class.
    assert 1 < report["top1_distinct_classes"] <= IMAGES
    assert report["logits_rms_diff_relative"] >= 0.0
    (bf16,) = report["precision_agreement"]
    assert bf16["precision"] == "bf16 autocast" and bf16["reference"] == "fp32"
    assert bf16["device"] == "cpu"
    assert 0.0 <= bf16["top1_agreement"] <= 1.0
    assert bf16["logits_rms_diff_relative"] > 0.0  # bf16 does change the logits


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_asking_for_cuda_without_it_says_so() -> None:
    with pytest.raises(SystemExit, match="torch sees no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


def test_the_gpu_section_reads_the_report_as_written(report: dict[str, Any]) -> None:
    text = parity_paragraph(report)
    assert f"bench/decode_parity.py on cpu, decode-parity.json): {IMAGES}" in text
    assert "resnet18 3x224x224, random init with BatchNorm statistics" in text
    assert f"by {report['pixels']['mean_abs_diff']:.3f} uint8 levels" in text
    assert "bf16 autocast on cpu" in text and "n/a" not in text
