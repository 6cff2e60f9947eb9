"""The GPU section of RESULTS.md: figures from bench/gpu_check.sh, when a GPU run made them.

bench/gpu_check.sh writes gpu-results.json; copied to bench/gpu-results.json,
its figures appear here with the card's name. Without it, the section says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GPU_RESULTS = Path(__file__).resolve().parent / "gpu-results.json"
TRITON_A100_IMG_S = 5411.0  # NVIDIA's published Triton ResNet-50 (TensorRT FP16) figure on an A100


def gpu_lines(path: Path = GPU_RESULTS) -> list[str]:
    head = ["## GPU (bench/gpu_check.sh)", ""]
    if not path.is_file():
        return [
            *head,
            "Not measured in this run: this machine has no GPU. On a CUDA machine,",
            "`bash bench/gpu_check.sh` runs the `gpu` tests and the resnet50 benchmark and writes",
            "gpu-results.json; copy it to bench/gpu-results.json and re-run",
            "`python -m bench.run --render-only` to fold it in.",
            "",
        ]
    data: dict[str, Any] = json.loads(path.read_text())
    rows = [
        ("in-process, best batch", data.get("inprocess_img_s"), data.get("inprocess_batch")),
        ("service, V2 binary batches", data.get("service_batch_img_s"), data.get("batch_request")),
        ("service, one JPEG per request, c=128", data.get("service_jpeg_img_s"), None),
    ]
    lines = [
        *head,
        f"Card: {data.get('device', 'unknown')}; {data.get('date', '')}; model resnet50 (random"
        f" init) 224x224, {data.get('precision', '')}.",
        "",
        "| path | img/s | batch |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {_f(v)} | {b if b is not None else ''} |" for name, v, b in rows]
    inproc, best = data.get("inprocess_img_s"), data.get("service_batch_img_s")
    if inproc and best:
        lines += ["", f"Service over in-process: {best / inproc:.2f}x (target >= 0.8x)."]
    if best:
        lines += [f"Service over {TRITON_A100_IMG_S:,.0f} img/s: {best / TRITON_A100_IMG_S:.2f}x."]
    return [*lines, ""]


def _f(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "n/a"
