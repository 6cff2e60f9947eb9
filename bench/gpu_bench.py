"""The GPU benchmark (run by bench/gpu_check.sh on a CUDA machine).

resnet50 (random init) at 224x224: the engine in-process at its best batch,
then the service end to end with V2 binary UINT8 batches, and with one JPEG
per request at c=128, both under hey. Writes gpu-results.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

import models
from bench import procs
from bench.hey import Load, run_hey
from bench.workloads import china_jpeg, encode
from service.devices import plan_for
from service.engine import Engine

BATCHES = (32, 64, 128, 256)
V2_BATCH = 64


def pack_resnet50(folder: Path) -> Path:
    card = folder / "resnet50.json"
    if not card.is_file():
        command = [sys.executable, "-m", "models.pack", "--arch", "resnet50", "--random-init"]
        command += ["--num-classes", "1000", "--input", "3x224x224", "--out", str(folder)]
        subprocess.run(command, check=True)
    return card


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


def start_service(card: Path, out: Path, batch: int, workers: int) -> tuple[procs.Server, str]:
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
    }
    command = [sys.executable, "-m", "service.cli", "--host", "127.0.0.1", "--port", str(port)]
    log_path = out / f"gpu-server-{workers}-workers.log"
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


def service_points(hey: str, base: str, out: Path, seconds: float) -> dict[str, object]:
    body, head = v2_uint8_body(V2_BATCH)
    (out / "v2.bin").write_bytes(body)
    v2 = Load(f"{base}/v2/models/resnet50/infer", out / "v2.bin", "application/octet-stream",
              concurrency=16, seconds=seconds,
              headers=(f"Inference-Header-Content-Length: {head}",))  # fmt: skip
    photo = Image.open(io.BytesIO(china_jpeg())).convert("RGB").resize((224, 224))
    (out / "photo224.jpg").write_bytes(encode(photo, "JPEG", quality=90))
    jpeg = Load(f"{base}/v1/classify", out / "photo224.jpg", "image/jpeg", 128, seconds)
    batch_point = load_point(hey, v2, 5)
    print(f"service V2 binary x{V2_BATCH}: {batch_point}", flush=True)
    jpeg_point = load_point(hey, jpeg, 5)
    print(f"service one JPEG per request, c=128: {jpeg_point}", flush=True)
    return {
        "service_batch_img_s": float(str(batch_point["req_s"])) * V2_BATCH,
        "batch_request": f"V2 binary UINT8 [{V2_BATCH},3,224,224], c=16",
        "service_batch": batch_point,
        "service_jpeg_img_s": jpeg_point["req_s"],
        "service_jpeg": jpeg_point,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnn-serve-gpu"))
    parser.add_argument("--hey", default="hey")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    out, work = args.out.resolve(), args.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)  # the model and the bodies: large, not results
    card = pack_resnet50(work / "resnet50")
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
    server, base = start_service(card, out, batch, workers)
    try:
        results.update(service_points(args.hey, base, work, args.seconds))
    finally:
        procs.stop(server)
    # The single process beside it: what the HTTP workers add on this node.
    server, base = start_service(card, out, batch, 1)
    try:
        single = service_points(args.hey, base, work, args.seconds / 3)
        results["single_process"] = {k: single[k] for k in ("service_batch", "service_jpeg")}
    finally:
        procs.stop(server)
    (out / "gpu-results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
