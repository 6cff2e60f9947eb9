"""The GPU benchmark (run by bench/gpu_check.sh on a CUDA machine).

resnet50 (random init) at 224x224: the engine in-process at its best batch,
then the service end to end under hey: V2 binary UINT8 batches of 64 images at
c=16, V2 binary UINT8 one image per request at c=128 (its p99), one 427x640
JPEG (china.jpg, quality 90) per request at c=128 and at c=1 (its p50); the
c=128 JPEG point again with CNN_DEVICE_DECODE=off (the HTTP workers decode in
PIL), for what decoding on the GPU gains; then the service as one process.
For each service: the seconds from its start to /readyz, and which of its
processes hold GPU memory (nvidia-smi). Writes gpu-results.json.

The c=128 V2 point sends one image per request because a 64-image request at
c=128 keeps 8,192 images in flight: at 6,127 img/s that is 1.3 s a request by
Little's law, whatever the service does; one image a request is 21 ms.

`--device cpu` rehearses the same flow on a machine without a GPU, every step
the GPU run takes, with batches a CPU answers in well under a second (PROFILES)
and two HTTP workers; nvidia-smi is absent there, so its queries record None.
Its gpu-results.json says "device": "cpu", and bench/gpu_section.py neither
loads it into RESULTS.md nor judges the H100 goals on it:

    python -m bench.gpu_bench --device cpu --arch resnet18 --seconds 2 --out /tmp/gpu-rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from bench import procs
from bench.decode_parity import pack_random
from bench.hey import Load, run_hey
from bench.workloads import china_jpeg
from service.devices import plan_for
from service.engine import Engine

PHOTO = "china427x640.jpg"  # china.jpg at its own size, JPEG quality 90
DEFAULT_SECONDS = 12.0  # per load point; the warm-ups below are sized for it
ARCHS = ("resnet50", "resnet18")  # the random-init models bench/decode_parity.py packs too


@dataclass(frozen=True)
class Profile:
    """What the GPU run and its CPU rehearsal do differently."""

    device: str  # the in-process engine's and the services' CNN_DEVICE
    batches: tuple[int, ...]  # the in-process sweep; the best one is the services' max batch
    v2_batch: int  # images per V2 batch request, at c=16

    def workers(self) -> int:
        """HTTP workers of the default service: a GPU node's rule, or two on a CPU (the
        multi-worker path, beside the engine's cores)."""
        return gpu_node_workers() if self.device == "cuda" else 2

    def device_name(self) -> str:
        """The card's name; "cpu" for a rehearsal, whose figures are no GPU's."""
        return torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu"

    def release_memory(self) -> None:
        """The services' engines get the in-process engine's GPU memory back."""
        if self.device == "cuda":
            torch.cuda.empty_cache()


PROFILES = {
    "cuda": Profile("cuda", batches=(32, 64, 128, 256), v2_batch=64),
    # 16 V2 requests of 8 images keep 128 images in flight: about a second on two cores.
    "cpu": Profile("cpu", batches=(8, 16), v2_batch=8),
}


def in_process(card: Path, profile: Profile, seconds: float) -> tuple[float, int, str]:
    """Best img/s of the service's own engine, uint8 pixels from host memory to answers."""
    plan = plan_for(profile.device, "auto")
    if plan.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as service.loading sets it
    engine = Engine(models.load(card), plan)
    # As the service warms its engines: on CUDA this captures the graphs it replays, so the
    # ceiling and the service run the same forward pass.
    engine.warm_up(profile.batches)
    best = (0.0, 0)
    for batch in profile.batches:
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


@dataclass(frozen=True)
class Running:
    """A service started for some points: its URL, its processes, how many HTTP workers."""

    base: str
    server: procs.Server
    workers: int
    label: str  # "14 HTTP workers, CNN_DEVICE_DECODE=off", "one process"

    @property
    def cold_start_s(self) -> float | None:
        """Seconds from its process's start to the first 200 from /readyz."""
        return self.server.ready_s


def describe(workers: int, extra: Mapping[str, str]) -> str:
    name = "one process" if workers == 1 else f"{workers} HTTP workers"
    return ", ".join([name, *(f"{key}={value}" for key, value in extra.items())])


@dataclass(frozen=True)
class Model:
    """The packed card every service serves, under its architecture's name, on its device."""

    card: Path
    name: str
    device: str


@contextmanager
def serving(
    model: Model, out: Path, batch: int, workers: int, extra: Mapping[str, str] | None = None
) -> Iterator[Running]:
    """The service for the points inside the block, stopped after it."""
    extra = extra or {}
    server, base = start_service(model, out, batch, workers, extra)
    try:
        yield Running(base, server, workers, describe(workers, extra))
    finally:
        procs.stop(server)


def service_env(model: Model, batch: int, workers: int, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "CNN_WORKERS": str(workers),
        "CNN_TORCH_THREADS": "2",
        "CNN_MODELS": f"{model.name}={model.card}",
        "CNN_DEVICE": model.device,
        "CNN_MAX_BATCH_SIZE": str(batch),
        "CNN_MAX_QUEUE_SIZE": "8192",
        "CNN_PREPROCESS_WORKERS": str(min(16, os.cpu_count() or 1)),
        "CNN_LOG_LEVEL": "warning",
        **extra,
    }


def start_service(
    model: Model, out: Path, batch: int, workers: int, extra: Mapping[str, str]
) -> tuple[procs.Server, str]:
    port = procs.free_port()
    env = service_env(model, batch, workers, extra)
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


def write_photo(work: Path) -> Path:
    """The JPEG every JPEG point sends: the whole 427x640 photo, decoded and resized by the
    service, as a client's photo would be."""
    path = work / PHOTO
    path.write_bytes(china_jpeg())
    return path


@dataclass(frozen=True)
class Client:
    """How the load points are sent: hey, the bodies' folder, the photo, the model's name
    in V2 URLs, the V2 batch size, and the seconds of a full point."""

    hey: str
    work: Path
    photo: Path
    model: str
    v2_batch: int
    seconds: float

    def warm(self, seconds: float) -> float:
        """A warm-up sized for DEFAULT_SECONDS points, shorter in proportion for shorter ones."""
        return seconds * min(1.0, self.seconds / DEFAULT_SECONDS)


def jpeg_point(
    client: Client, base: str, concurrency: int, seconds: float, warm: float
) -> dict[str, object]:
    """One JPEG per request at `concurrency`."""
    jpeg = Load(f"{base}/v1/classify", client.photo, "image/jpeg", concurrency, seconds)
    return load_point(client.hey, jpeg, client.warm(warm))


def v2_point(
    client: Client, base: str, images: int, concurrency: int, seconds: float, warm: float
) -> dict[str, object]:
    """V2 binary UINT8 requests of `images` images at `concurrency`; img/s added."""
    body, head = v2_uint8_body(images)
    path = client.work / f"v2x{images}.bin"
    path.write_bytes(body)
    v2 = Load(f"{base}/v2/models/{client.model}/infer", path, "application/octet-stream",
              concurrency=concurrency, seconds=seconds,
              headers=(f"Inference-Header-Content-Length: {head}",))  # fmt: skip
    point = load_point(client.hey, v2, client.warm(warm))
    return {**point, "img_s": float(str(point["req_s"])) * images}


def batch_and_jpeg_points(client: Client, base: str, seconds: float) -> dict[str, object]:
    """The two points every service answers: V2 batches at c=16, one JPEG at c=128."""
    images = client.v2_batch
    batch = v2_point(client, base, images, 16, seconds, 5)
    print(f"service V2 binary x{images}, c=16: {batch}", flush=True)
    jpeg = jpeg_point(client, base, 128, seconds, 5)
    print(f"service one 427x640 JPEG per request, c=128: {jpeg}", flush=True)
    return {
        "service_batch_img_s": batch["img_s"],
        "service_batch": batch,
        "service_jpeg_img_s": jpeg["req_s"],
        "service_jpeg": jpeg,
    }


def service_points(client: Client, base: str) -> dict[str, object]:
    """The default service's points: the two above, V2 at c=128, one JPEG at c=1."""
    seconds = client.seconds
    results = batch_and_jpeg_points(client, base, seconds)
    # The service is warm from the points above: shorter warm-ups, within the time limit.
    c128 = v2_point(client, base, 1, 128, seconds, 3)
    print(f"service V2 binary x1, c=128: {c128}", flush=True)
    # A few seconds are thousands of requests at c=1: enough for a p50.
    c1 = jpeg_point(client, base, 1, min(5.0, seconds), 2)
    print(f"service one 427x640 JPEG per request, c=1: {c1}", flush=True)
    return {
        **results,
        "batch_request": f"V2 binary UINT8 [{client.v2_batch},3,224,224], c=16",
        "service_v2_c128_img_s": c128["img_s"],
        "v2_c128_request": "V2 binary UINT8 [1,3,224,224], c=128",
        "service_v2_c128": c128,
        "jpeg_request": f"{PHOTO}, c=128",
        "service_jpeg_c1_img_s": c1["req_s"],
        "jpeg_c1_request": f"{PHOTO}, c=1",
        "service_jpeg_c1": c1,
    }


def cpu_decode_points(client: Client, base: str) -> dict[str, object]:
    """The JPEG point with the HTTP workers decoding (CNN_DEVICE_DECODE=off)."""
    point = jpeg_point(client, base, 128, client.seconds, 5)
    print(f"service one JPEG per request, c=128, CNN_DEVICE_DECODE=off: {point}", flush=True)
    return {"service_jpeg_cpu_decode_img_s": point["req_s"], "service_jpeg_cpu_decode": point}


def gpu_processes(running: Running) -> dict[str, object]:
    """Which processes hold GPU memory while the service runs, and how much (MiB).

    "processes": the service's own, whose count is its model copies on the one GPU (one,
    whatever its worker count, where the engine alone holds the model); "other_processes":
    the rest, such as this benchmark's own in-process engine, or every process where
    nvidia-smi reports another PID namespace's ids. None: nvidia-smi absent or failing.
    """
    apps = procs.gpu_compute_apps()
    found: dict[str, object] = {"workers": running.workers}
    if apps is None:
        return {**found, "processes": None, "other_processes": None}
    tree = set(procs.process_tree(running.server.pid))
    return {
        **found,
        "processes": [[pid, mib] for pid, mib in apps if pid in tree],
        "other_processes": [[pid, mib] for pid, mib in apps if pid not in tree],
    }


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
    # Time on an H100 at the default 12 s points, against gpu_check.sh's 270 s for this step:
    #   packing resnet50 (reused from decode_parity) and the in-process engine: ~15 s, its sweep
    #     4 x (3 warm-up runs + 4 s): ~17 s;
    #   three service starts, 10-20 s each with CUDA graphs' warm-up, and stops: 35-70 s;
    #   the default service: V2 x64 c=16 5+12 s, V2 x1 c=128 3+12 s, JPEG c=128 5+12 s,
    #     JPEG c=1 2+5 s: 56 s; CNN_DEVICE_DECODE=off: JPEG c=128 5+12 s: 17 s; one process:
    #     V2 x64 and JPEG c=128 at 5+4 s each: 18 s; nvidia-smi twice: ~1 s;
    #   in all about 160-195 s, under 250 s even with 20 s starts.
    # The CPU rehearsal (--device cpu --arch resnet18 --seconds 2) on two cores: ~50 s, its
    #   starts ~4 s each.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnn-serve-gpu"))
    parser.add_argument("--hey", default="hey")
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS,
        help="per load point; the warm-ups shrink in proportion below the default",
    )  # fmt: skip
    parser.add_argument(
        "--device", choices=tuple(PROFILES), default="cuda",
        help="cpu: a rehearsal of the flow on a machine without a GPU (no GPU figures)",
    )  # fmt: skip
    parser.add_argument("--arch", choices=ARCHS, default="resnet50")
    args = parser.parse_args()
    profile: Profile = PROFILES[args.device]
    out, work = args.out.resolve(), args.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)  # the model and the bodies: large, not results
    card = pack_random(work / args.arch, args.arch)  # decode_parity's model, if it ran first
    rate, batch, precision = in_process(card, profile, seconds=args.seconds / 3)
    profile.release_memory()
    results: dict[str, object] = {
        "device": profile.device_name(),
        "device_type": profile.device,  # "cpu": a rehearsal, its figures no GPU's
        "arch": args.arch,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "precision": f"precision {precision}",
        "inprocess_img_s": rate,
        "inprocess_batch": batch,
    }
    workers = profile.workers()
    results["workers"] = workers
    model = Model(card, args.arch, profile.device)
    client = Client(args.hey, work, write_photo(work), args.arch, profile.v2_batch, args.seconds)
    starts: dict[str, float | None] = {}  # every start's seconds to /readyz, by service
    results["cold_starts_s"] = starts
    with serving(model, out, batch, workers) as running:
        starts[running.label] = results["cold_start_s"] = running.cold_start_s
        results.update(service_points(client, running.base))
        results["gpu_processes"] = gpu_processes(running)  # after the load: all memory taken
    save(out, results)
    # Right after it, the same service decoding JPEGs in its HTTP workers: what the GPU's
    # decoder gains (CNN_DEVICE_DECODE=auto, the default, decodes on a CUDA engine's device).
    with serving(model, out, batch, workers, {"CNN_DEVICE_DECODE": "off"}) as running:
        starts[running.label] = running.cold_start_s
        results.update(cpu_decode_points(client, running.base))
    results["jpeg_device_decode_ratio"] = device_decode_ratio(results)
    save(out, results)
    # The single process beside it: what the HTTP workers add on this node.
    with serving(model, out, batch, 1) as running:
        starts[running.label] = running.cold_start_s
        single = batch_and_jpeg_points(client, running.base, args.seconds / 3)
        results["single_process"] = {
            **single,
            "cold_start_s": running.cold_start_s,
            "gpu_processes": gpu_processes(running),
        }
    save(out, results)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
