"""The GPU section of RESULTS.md: figures from bench/gpu_check.sh, when a GPU run made them.

bench/gpu_check.sh writes gpu-results.json; copied to bench/gpu-results.json,
its figures appear here with the card's name. Without it, the section says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report_markdown import fill

GPU_RESULTS = Path(__file__).resolve().parent / "gpu-results.json"
TRITON_A100_IMG_S = 5411.0  # NVIDIA's published Triton ResNet-50 (TensorRT FP16) figure on an A100
IMG_S = ("inprocess_img_s", "service_batch_img_s", "service_jpeg_img_s")


def load_gpu_results(path: Path = GPU_RESULTS) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _img_s(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "n/a"


def gpu_section(data: dict[str, Any] | None) -> str:
    if data is None:
        return fill("gpu-missing")
    inproc, best = data.get("inprocess_img_s"), data.get("service_batch_img_s")
    ratios = []
    if inproc and best:
        ratios.append(fill("gpu-vs-inprocess", ratio=f"{best / inproc:.2f}x"))
    if best:
        triton = f"{TRITON_A100_IMG_S:,.0f}"
        ratios.append(
            fill("gpu-vs-triton", triton=triton, ratio=f"{best / TRITON_A100_IMG_S:.2f}x")
        )
    return fill(
        "gpu",
        **{key: _img_s(data.get(key)) for key in IMG_S},
        **{
            key: "" if data.get(key) is None else data[key]
            for key in ("inprocess_batch", "batch_request")
        },
        device=data.get("device", "unknown"),
        date=data.get("date", ""),
        precision=data.get("precision", ""),
        ratios="\n".join(ratios),
    )
