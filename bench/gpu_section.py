"""The GPU section of RESULTS.md: figures from bench/gpu_check.sh, when a GPU run made them.

bench/gpu_check.sh writes gpu-results.json and decode-parity.json; copied to bench/, their
figures appear here with the card's name, and each goal set for an H100 beside the figure
that it is about: met, missed, or n/a where the run did not measure it. Without them, the
section says so; with one of the two, it shows what that one holds.

A CPU rehearsal of bench/gpu_bench.py (`--device cpu`, "device": "cpu" in its
gpu-results.json) is no GPU run: load_gpu_results leaves it out of RESULTS.md, and rendered
on purpose it says so above its figures and judges no goal on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.report_markdown import fill

GPU_RESULTS = Path(__file__).resolve().parent / "gpu-results.json"
DECODE_PARITY = "decode-parity.json"  # bench/decode_parity.py's report, beside gpu-results.json
TRITON_A100_IMG_S = 5411.0  # NVIDIA's published Triton ResNet-50 (TensorRT FP16) figure on an A100
IMG_S = (
    "inprocess_img_s",
    "service_batch_img_s",
    "service_v2_c128_img_s",
    "service_jpeg_img_s",
    "service_jpeg_cpu_decode_img_s",
    "service_jpeg_c1_img_s",
)
REQUESTS = ("batch_request", "v2_c128_request", "jpeg_request", "jpeg_c1_request")
POINTS = ("service_batch", "service_v2_c128", "service_jpeg", "service_jpeg_cpu_decode",
          "service_jpeg_c1")  # fmt: skip
SINGLE_POINTS = ("service_batch", "service_jpeg")  # the service as one process
# The goals for resnet50 on an H100: floors for throughput, ceilings for time.
BATCH_RATIO_GOAL = 0.8  # V2 binary batches, service over the in-process ceiling
BATCH_IMG_S_GOAL = 6127.0
V2_P99_MS_GOAL = 50.0  # V2 binary at c=128
JPEG_IMG_S_GOAL = 4000.0  # one 427x640 JPEG per request at c=128
DECODE_RATIO_GOAL = 1.5  # that, over the same with CNN_DEVICE_DECODE=off
JPEG_C1_P50_MS_GOAL = 5.0
COLD_START_S_GOAL = 30.0  # under: from process start to /readyz
NOT_JUDGED = "not judged"  # a CPU rehearsal's figures against the H100 goals


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def is_rehearsal(data: Mapping[str, Any]) -> bool:
    """gpu-results.json from a CPU rehearsal (bench/gpu_bench.py --device cpu): no GPU's figures."""
    return data.get("device_type", "cuda") != "cuda" or data.get("device") == "cpu"


def load_gpu_results(path: Path = GPU_RESULTS, *, rehearsal: bool = False) -> dict[str, Any] | None:
    """gpu-results.json, with decode-parity.json from the same folder under "decode_parity".

    A CPU rehearsal's gpu-results.json counts as absent unless `rehearsal` (to look at one)."""
    data, parity = _read(path), _read(path.with_name(DECODE_PARITY))
    if data is not None and is_rehearsal(data) and not rehearsal:
        data = None
    if data is None and parity is None:
        return None
    return {**(data or {}), **({"decode_parity": parity} if parity else {})}


def _img_s(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "n/a"


def _figure(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _ms(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "n/a"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _with_unit(text: str, unit: str) -> str:
    return text if text == "n/a" else f"{text} {unit}"


def _verdict(value: float | None, met: Callable[[float], bool]) -> str:
    return "n/a" if value is None else "met" if met(value) else "missed"


def _ratio(top: object, bottom: object) -> float | None:
    over, under = _number(top), _number(bottom)
    return over / under if over is not None and under else None


def _latencies(prefix: str, points: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """p50 and p99 (ms) of each point, as `prefix + key + "_p50"` placeholders."""
    cells = {}
    for key in keys:
        point = points.get(key)
        point = point if isinstance(point, dict) else {}
        cells[f"{prefix}{key}_p50"] = _ms(point.get("p50_ms"))
        cells[f"{prefix}{key}_p99"] = _ms(point.get("p99_ms"))
    return cells


def _point(data: dict[str, Any], key: str, figure: str) -> float | None:
    point = data.get(key)
    return _number(point.get(figure)) if isinstance(point, dict) else None


def _service_name(workers: object) -> str:
    return "one process" if workers == 1 else f"{workers} HTTP workers"


def _gpu_memory(services: list[object]) -> tuple[str, str]:
    """Processes of each service holding GPU memory, and the verdict on one model copy per
    GPU: one process each, whatever the worker count. A service none of whose processes
    nvidia-smi lists (another PID namespace's ids, or none shown in a container) says nothing."""
    figures, counts = [], []
    for record in services:
        if not isinstance(record, dict):
            continue
        name, processes = _service_name(record.get("workers", "?")), record.get("processes")
        if not isinstance(processes, list):
            figures.append(f"{name}: nvidia-smi not available")
            continue
        others = record.get("other_processes") or []
        if not processes:
            figures.append(f"{name}: none of its processes listed ({len(others)} other)")
            continue
        mib = sum(row[1] for row in processes if isinstance(row[1], int))
        plural = "process" if len(processes) == 1 else "processes"
        figures.append(f"{name}: {len(processes)} {plural}, {mib:,} MiB")
        counts.append(len(processes))
    verdict = "n/a" if not counts else "met" if set(counts) == {1} else "missed"
    return "; ".join(figures) or "n/a", verdict


def _starts(starts: object) -> str:
    if not isinstance(starts, dict) or not starts:
        return "n/a"
    return "; ".join(f"{name}: {_figure(seconds, 1)} s" for name, seconds in starts.items())


def goals(data: dict[str, Any]) -> str:
    """The goals table: each figure against its goal, met or missed (n/a: not measured)."""
    single = data.get("single_process")
    single = single if isinstance(single, dict) else {}
    batch_ratio = _ratio(data.get("service_batch_img_s"), data.get("inprocess_img_s"))
    batch_img_s = _number(data.get("service_batch_img_s"))
    v2_p99 = _point(data, "service_v2_c128", "p99_ms")
    jpeg_img_s = _number(data.get("service_jpeg_img_s"))
    decode_ratio = _number(data.get("jpeg_device_decode_ratio"))
    jpeg_c1_p50 = _point(data, "service_jpeg_c1", "p50_ms")
    cold_start = _number(data.get("cold_start_s"))
    memory, memory_verdict = _gpu_memory([data.get("gpu_processes"), single.get("gpu_processes")])
    judged = not is_rehearsal(data)

    def verdict(value: float | None, met: Callable[[float], bool]) -> str:
        return _verdict(value, met) if judged else NOT_JUDGED

    return fill(
        "gpu-goals",
        batch_ratio_goal=f"{BATCH_RATIO_GOAL:.1f}x",
        batch_ratio="n/a" if batch_ratio is None else f"{batch_ratio:.2f}x",
        batch_ratio_verdict=verdict(batch_ratio, lambda v: v >= BATCH_RATIO_GOAL),
        batch_img_s_goal=_img_s(BATCH_IMG_S_GOAL),
        batch_img_s=_with_unit(_img_s(batch_img_s), "img/s"),
        batch_img_s_verdict=verdict(batch_img_s, lambda v: v >= BATCH_IMG_S_GOAL),
        v2_p99_goal=_ms(V2_P99_MS_GOAL),
        v2_p99=_with_unit(_ms(v2_p99), "ms"),
        v2_p99_verdict=verdict(v2_p99, lambda v: v <= V2_P99_MS_GOAL),
        jpeg_img_s_goal=_img_s(JPEG_IMG_S_GOAL),
        jpeg_img_s=_with_unit(_img_s(jpeg_img_s), "img/s"),
        jpeg_img_s_verdict=verdict(jpeg_img_s, lambda v: v >= JPEG_IMG_S_GOAL),
        decode_ratio_goal=f"{DECODE_RATIO_GOAL:.1f}x",
        decode_ratio="n/a" if decode_ratio is None else f"{decode_ratio:.2f}x",
        decode_ratio_verdict=verdict(decode_ratio, lambda v: v >= DECODE_RATIO_GOAL),
        jpeg_c1_p50_goal=_ms(JPEG_C1_P50_MS_GOAL),
        jpeg_c1_p50=_with_unit(_ms(jpeg_c1_p50), "ms"),
        jpeg_c1_p50_verdict=verdict(jpeg_c1_p50, lambda v: v <= JPEG_C1_P50_MS_GOAL),
        gpu_memory=memory,
        gpu_memory_verdict=memory_verdict if judged else NOT_JUDGED,
        cold_start_goal=_figure(COLD_START_S_GOAL, 0),
        cold_start=_with_unit(_figure(cold_start, 1), "s"),
        cold_start_verdict=verdict(cold_start, lambda v: v < COLD_START_S_GOAL),
        starts=_starts(data.get("cold_starts_s")),
    )


def _triton(data: dict[str, Any]) -> str:
    best = _number(data.get("service_batch_img_s"))
    if not best or is_rehearsal(data):
        return ""
    triton = f"{TRITON_A100_IMG_S:,.0f}"
    return fill("gpu-vs-triton", triton=triton, ratio=f"{best / TRITON_A100_IMG_S:.2f}x")


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
    single = data.get("single_process")
    single = single if isinstance(single, dict) else {}
    batch = data.get("inprocess_batch")
    model = data.get("arch") or "resnet50"
    rehearsal = fill("gpu-rehearsal", model=model) if is_rehearsal(data) else ""
    return fill(
        "gpu",
        **{key: _img_s(data.get(key)) for key in IMG_S},
        **{key: "n/a" if data.get(key) is None else data[key] for key in REQUESTS},
        **_latencies("", data, POINTS),
        **_latencies("single_", single, SINGLE_POINTS),
        single_batch_img_s=_img_s(single.get("service_batch_img_s")),
        single_jpeg_img_s=_img_s(single.get("service_jpeg_img_s")),
        inprocess_batch="" if batch is None else f"batch {batch}",
        rehearsal=rehearsal,
        device=device,
        model=model,
        date=data.get("date", ""),
        precision=data.get("precision", ""),
        workers=data.get("workers", "n/a"),
        goals=goals(data),
        triton=_triton(data),
        parity=parity_paragraph(parity),
    )
