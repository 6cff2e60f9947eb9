"""The GPU section of RESULTS.md: figures from bench/gpu_check.sh, when a GPU run made them.

bench/gpu_check.sh writes gpu-results.json and decode-parity.json; copied to bench/, their
figures appear here with the card's name. Without them, the section says so; with one of
the two, it shows what that one holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report_markdown import fill

GPU_RESULTS = Path(__file__).resolve().parent / "gpu-results.json"
DECODE_PARITY = "decode-parity.json"  # bench/decode_parity.py's report, beside gpu-results.json
TRITON_A100_IMG_S = 5411.0  # NVIDIA's published Triton ResNet-50 (TensorRT FP16) figure on an A100
IMG_S = (
    "inprocess_img_s",
    "service_batch_img_s",
    "service_jpeg_img_s",
    "service_jpeg_cpu_decode_img_s",
)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def load_gpu_results(path: Path = GPU_RESULTS) -> dict[str, Any] | None:
    """gpu-results.json, with decode-parity.json from the same folder under "decode_parity"."""
    data, parity = _read(path), _read(path.with_name(DECODE_PARITY))
    if data is None and parity is None:
        return None
    return {**(data or {}), **({"decode_parity": parity} if parity else {})}


def _img_s(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "n/a"


def _figure(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _ratios(data: dict[str, Any]) -> list[str]:
    inproc, best = data.get("inprocess_img_s"), data.get("service_batch_img_s")
    ratios = []
    if inproc and best:
        ratios.append(fill("gpu-vs-inprocess", ratio=f"{best / inproc:.2f}x"))
    if best:
        triton = f"{TRITON_A100_IMG_S:,.0f}"
        ratios.append(
            fill("gpu-vs-triton", triton=triton, ratio=f"{best / TRITON_A100_IMG_S:.2f}x")
        )
    decode = data.get("jpeg_device_decode_ratio")
    if isinstance(decode, int | float):
        ratios.append(fill("gpu-device-decode", ratio=f"{decode:.2f}x"))
    return ratios


def _model(parity: dict[str, Any]) -> str:
    model = parity.get("model") or {}
    name = f"{model.get('architecture', 'unknown model')} {model.get('input', '')}".strip()
    if not parity.get("random_init"):
        return name
    if model.get("batchnorm_from_photos"):
        return f"{name}, random init with BatchNorm statistics from the photos"
    return f"{name}, random init"


def _precisions(parity: dict[str, Any]) -> str:
    rows = [
        f"{row.get('precision', '?')} on {row.get('device', '?')} "
        f"{_figure(row.get('top1_agreement'), 4)}"
        for row in parity.get("precision_agreement") or []
    ]
    return ", ".join(rows) or "not measured"


def parity_paragraph(parity: dict[str, Any] | None) -> str:
    """decode-parity.json in a paragraph; empty without it."""
    if not parity:
        return ""
    pixels = parity.get("pixels") or {}
    agreement = parity.get("top1_agreement")
    threshold = parity.get("top1_agreement_threshold", 0.995)
    verdict = "at least" if parity.get("top1_agreement_ok") else "below"
    return fill(
        "gpu-decode-parity",
        device=parity.get("device", "unknown"),
        images=parity.get("images", "n/a"),
        decodable=parity.get("device_decodable", "n/a"),
        model=_model(parity),
        mean_diff=_figure(pixels.get("mean_abs_diff")),
        worst_diff=_figure(pixels.get("max_image_mean_abs_diff")),
        max_diff=pixels.get("max_abs_diff", "n/a"),
        agreement=_figure(agreement, 4),
        verdict=f"{verdict} {threshold}" if isinstance(agreement, int | float) else "not measured",
        classes=parity.get("top1_distinct_classes", "n/a"),
        precisions=_precisions(parity),
    )


def gpu_section(data: dict[str, Any] | None) -> str:
    if data is None:
        return fill("gpu-missing")
    parity = data.get("decode_parity")
    device = data.get("device") or (parity or {}).get("device", "unknown")
    return fill(
        "gpu",
        **{key: _img_s(data.get(key)) for key in IMG_S},
        **{
            key: "" if data.get(key) is None else data[key]
            for key in ("inprocess_batch", "batch_request")
        },
        device=device,
        date=data.get("date", ""),
        precision=data.get("precision", ""),
        ratios="\n".join(_ratios(data)),
        parity=parity_paragraph(parity),
    )
