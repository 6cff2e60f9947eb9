"""The GPU benchmark (run by bench/gpu_check.sh on a CUDA machine).

resnet50 (random init) at 224x224: the engine in-process at its best batch,
then the service end to end with V2 binary UINT8 batches, and with one JPEG
per request at c=128, both under hey; the JPEG point again with
CNN_DEVICE_DECODE=off (the HTTP workers decode in PIL), for what decoding on
the GPU gains. Writes gpu-results.json.

Time, against gpu_check.sh's 270 s: at the default of 12 s per point, the
in-process sweep (4 x 4 s) and the load points (5 s of warm-up each) take about
90 s; the rest is packing the model and three service starts, tens of seconds
each with CUDA graphs' warm-up.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

import models
from bench import procs
from bench.decode_parity import pack_random
from bench.hey import Load, run_hey
from bench.workloads import china_jpeg, encode
from service.devices import plan_for
from service.engine import Engine

BATCHES = (32, 64, 128, 256)
V2_BATCH = 64


def in_process(card: Path, seconds: float) -> tuple[float, int, str]:
    """Best img/s of the service's own engine, uint8 pixels from host memory to answers."""
    plan = plan_for("cuda", "auto")
    engine = Engine(models.load(card), plan)
    best = (0.0, 0)
    for batch in BATCHES:
        pixels = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
        for _ in range(3):
            engine.run([pixels])
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            engine.run([pixels])  # returns NumPy: synchronized
            done += batch
        rate = done / (time.perf_counter() - started)
        print(f"in-process batch {batch}: {rate:,.0f} img/s", flush=True)
        best = max(best, (rate, batch))
    return best[0], best[1], plan.precision


def v2_uint8_body(batch: int) -> tuple[bytes, int]:
    data = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8).numpy().tobytes()
    header = {
        "inputs": [
            {
                "name": "input",
                "datatype": "UINT8",
                "shape": [batch, 3, 224, 224],
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
    }
    head = json.dumps(header).encode()
    return head + data, len(head)


def gpu_node_workers() -> int:
    """The README's rule for a GPU node: the engine keeps two cores, the workers the rest."""
    return max(1, min(16, (os.cpu_count() or 1) - 2))


@contextmanager
def serving(
    card: Path, out: Path, batch: int, workers: int, extra: Mapping[str, str] | None = None
) -> Iterator[str]:
    """The service for the points inside the block: yields its base URL, stops it after."""
    server, base = start_service(card, out, batch, workers, extra or {})
    try:
        yield base
    finally:
        procs.stop(server)


def start_service(
    card: Path, out: Path, batch: int, workers: int, extra: Mapping[str, str]
) -> tuple[procs.Server, str]:
    port = procs.free_port()
    env = {
        "CNN_WORKERS": str(workers),
        "CNN_TORCH_THREADS": "2",
        "CNN_MODELS": f"resnet50={card}",
        "CNN_DEVICE": "cuda",
        "CNN_MAX_BATCH_SIZE": str(batch),
        "CNN_MAX_QUEUE_SIZE": "8192",
        "CNN_PREPROCESS_WORKERS": str(min(16, os.cpu_count() or 1)),
        "CNN_LOG_LEVEL": "warning",
        **extra,
    }
    command = [sys.executable, "-m", "service.cli", "--host", "127.0.0.1", "--port", str(port)]
    tag = "".join(f"-{key.removeprefix('CNN_').lower()}-{value}" for key, value in extra.items())
    log_path = out / f"gpu-server-{workers}-workers{tag}.log"
    server = procs.start("cnn-serve", command, env=env, log_path=log_path)
    base = f"http://127.0.0.1:{port}"
    procs.wait_ready(server, f"{base}/readyz", timeout=240)
    return server, base


def load_point(hey: str, load: Load, warm: float) -> dict[str, object]:
    run_hey(hey, Load(load.url, load.body, load.content_type, load.concurrency, warm,
                      headers=load.headers))  # fmt: skip
    result = run_hey(hey, load)
    return {"req_s": result.req_s, "p50_ms": result.latency_ms(50),
            "p99_ms": result.latency_ms(99), "failed": result.failed}  # fmt: skip


def jpeg_point(hey: str, base: str, out: Path, seconds: float) -> dict[str, object]:
    """One baseline JPEG (china.jpg at 224x224, quality 90) per request, c=128."""
    photo = Image.open(io.BytesIO(china_jpeg())).convert("RGB").resize((224, 224))
    (out / "photo224.jpg").write_bytes(encode(photo, "JPEG", quality=90))
    jpeg = Load(f"{base}/v1/classify", out / "photo224.jpg", "image/jpeg", 128, seconds)
    return load_point(hey, jpeg, 5)


def service_points(hey: str, base: str, out: Path, seconds: float) -> dict[str, object]:
    body, head = v2_uint8_body(V2_BATCH)
    (out / "v2.bin").write_bytes(body)
    v2 = Load(f"{base}/v2/models/resnet50/infer", out / "v2.bin", "application/octet-stream",
              concurrency=16, seconds=seconds,
              headers=(f"Inference-Header-Content-Length: {head}",))  # fmt: skip
    batch_point = load_point(hey, v2, 5)
    print(f"service V2 binary x{V2_BATCH}: {batch_point}", flush=True)
    jpeg = jpeg_point(hey, base, out, seconds)
    print(f"service one JPEG per request, c=128: {jpeg}", flush=True)
    return {
        "service_batch_img_s": float(str(batch_point["req_s"])) * V2_BATCH,
        "batch_request": f"V2 binary UINT8 [{V2_BATCH},3,224,224], c=16",
        "service_batch": batch_point,
        "service_jpeg_img_s": jpeg["req_s"],
        "service_jpeg": jpeg,
    }


def cpu_decode_points(hey: str, base: str, out: Path, seconds: float) -> dict[str, object]:
    """The JPEG point with the HTTP workers decoding (CNN_DEVICE_DECODE=off)."""
    point = jpeg_point(hey, base, out, seconds)
    print(f"service one JPEG per request, c=128, CNN_DEVICE_DECODE=off: {point}", flush=True)
    return {"service_jpeg_cpu_decode_img_s": point["req_s"], "service_jpeg_cpu_decode": point}


def device_decode_ratio(results: Mapping[str, object]) -> float | None:
    """JPEG img/s decoding on the GPU (the default, auto) over decoding in the HTTP workers."""
    on, off = results.get("service_jpeg_img_s"), results.get("service_jpeg_cpu_decode_img_s")
    if isinstance(on, int | float) and isinstance(off, int | float) and off > 0:
        return on / off
    return None


def save(out: Path, results: Mapping[str, object]) -> None:
    """After each service: a start that fails (or the time limit) keeps what came before."""
    (out / "gpu-results.json").write_text(json.dumps(results, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnn-serve-gpu"))
    parser.add_argument("--hey", default="hey")
    parser.add_argument("--seconds", type=float, default=12.0, help="per load point")
    args = parser.parse_args()
    out, work = args.out.resolve(), args.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)  # the model and the bodies: large, not results
    card = pack_random(work / "resnet50", "resnet50")  # decode_parity's model, if it ran first
    rate, batch, precision = in_process(card, seconds=args.seconds / 3)
    results: dict[str, object] = {
        "device": torch.cuda.get_device_name(0),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "precision": f"precision {precision}",
        "inprocess_img_s": rate,
        "inprocess_batch": batch,
    }
    workers = gpu_node_workers()
    results["workers"] = workers
    with serving(card, out, batch, workers) as base:
        results.update(service_points(args.hey, base, work, args.seconds))
    save(out, results)
    # Right after it, the same service decoding JPEGs in its HTTP workers: what the GPU's
    # decoder gains (CNN_DEVICE_DECODE=auto, the default, decodes on a CUDA engine's device).
    with serving(card, out, batch, workers, {"CNN_DEVICE_DECODE": "off"}) as base:
        results.update(cpu_decode_points(args.hey, base, work, args.seconds))
    results["jpeg_device_decode_ratio"] = device_decode_ratio(results)
    save(out, results)
    # The single process beside it: what the HTTP workers add on this node.
    with serving(card, out, batch, 1) as base:
        single = service_points(args.hey, base, work, args.seconds / 3)
        results["single_process"] = {k: single[k] for k in ("service_batch", "service_jpeg")}
    save(out, results)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
