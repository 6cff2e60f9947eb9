"""How each server under test is started for a workload, and where to send its load.

cnn-serve runs with its defaults except the torch thread count (and precision,
in the variants); the peers run with the same model, the same preprocessing
code (bench/peers/peer_model.py) and the same torch threads. Triton serves the
model under the card's name with cnn-serve's /v2 tensor names, so that both get
the same Open Inference Protocol request but for the input's shape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import procs
from bench.peers.env import TRITON, peer_bin
from bench.scrape import HistogramTotals, histogram_totals, triton_batch_totals
from bench.workloads import Workload

PEERS_DIR = Path(__file__).resolve().parent / "peers"
TS_MODEL = "cnn"


@dataclass(frozen=True)
class Running:
    server: procs.Server
    ready_url: str
    predict_url: str
    body: Path
    content_type: str
    metrics_url: str | None = None
    headers: tuple[str, ...] = ()
    # Its /metrics text -> the batch-size totals (the mean batch over a window).
    batch_totals: Callable[[str], HistogramTotals | None] = histogram_totals

    def for_workload(self, workload: Workload) -> Running:
        """The same server under another workload's body (and path, for ours)."""
        url = self.predict_url
        if workload.path is not None:
            parts = urlsplit(url)
            url = urlunsplit((parts.scheme, parts.netloc, workload.path, "", ""))
        return replace(
            self,
            predict_url=url,
            body=workload.body,
            content_type=workload.content_type,
            headers=workload.headers,
        )


@dataclass(frozen=True)
class ServerKind:
    key: str  # "cnn-serve", "cnn-serve bf16", "torchserve", "triton", "litserve", "naive"
    label: str
    env: Mapping[str, str] = field(default_factory=dict)
    w2: bool = True  # also measured under W2

    @property
    def ours(self) -> bool:
        return self.key.startswith("cnn-serve")


def _cpu_env(threads: int) -> dict[str, str]:
    # Every server, ours and the peers, gets the machine's CPUs as its OpenMP thread count;
    # cnn-serve sizes its torch pool from its CPUs by its own default (they less one).
    return {"OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(PEERS_DIR)}


def launch(kind: ServerKind, workload: Workload, workdir: Path, *, threads: int) -> Running:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if kind.ours:
        return _ours(kind, workload, workdir, threads)
    if kind.key == "torchserve":
        return _torchserve(workload, workdir, threads)
    if kind.key == "triton":
        return _triton(workload, workdir, threads)
    if kind.key == "litserve":
        return _litserve(workload, workdir, threads)
    if kind.key == "naive":
        return _naive(workload, workdir, threads)
    raise ValueError(f"unknown server {kind.key!r}")


def _ours(kind: ServerKind, workload: Workload, workdir: Path, threads: int) -> Running:
    port = procs.free_port()
    name = workload.card.stem
    command = [
        str(Path(sys.executable).with_name("cnn-serve")),
        *("--host", "127.0.0.1", "--port", str(port), "--model", f"{name}={workload.card}"),
    ]
    env = {
        **_cpu_env(threads),
        # Its own default: the CPUs less one for torch (`threads` is the machine's CPUs).
        "CNN_LOG_LEVEL": "warning",
        **kind.env,
    }
    server = procs.start(kind.key, command, env=env, log_path=workdir / "server.log")
    base = f"http://127.0.0.1:{port}"
    return Running(
        server,
        f"{base}/readyz",
        f"{base}/v1/classify",
        workload.body,
        workload.content_type,
        metrics_url=f"{base}/metrics",
    )


def _naive(workload: Workload, workdir: Path, threads: int) -> Running:
    port = procs.free_port()
    command = [
        sys.executable,
        str(PEERS_DIR / "naive_server.py"),
        *("--card", str(workload.card), "--port", str(port), "--threads", str(threads)),
    ]
    server = procs.start("naive", command, env=_cpu_env(threads), log_path=workdir / "server.log")
    base = f"http://127.0.0.1:{port}"
    return Running(
        server, f"{base}/readyz", f"{base}/predict", workload.body, workload.content_type
    )


def _litserve(workload: Workload, workdir: Path, threads: int) -> Running:
    port = procs.free_port()
    command = [
        str(peer_bin("python")),
        str(PEERS_DIR / "litserve_server.py"),
        *("--card", str(workload.card), "--port", str(port), "--threads", str(threads)),
        *("--max-batch-size", "32", "--batch-timeout", "0.01"),
    ]
    server = procs.start(
        "litserve", command, env=_cpu_env(threads), log_path=workdir / "server.log", cwd=workdir
    )
    base = f"http://127.0.0.1:{port}"
    return Running(
        server, f"{base}/health", f"{base}/predict", workload.lit_body, "application/json"
    )


TRITON_MAX_BATCH = 32  # cnn-serve's default CNN_MAX_BATCH_SIZE
TRITON_QUEUE_DELAY_US = 1000


def _triton(workload: Workload, workdir: Path, threads: int) -> Running:
    if workload.triton is None:
        raise ValueError(f"{workload.key} has no request for Triton")
    workspace = workdir / "workspace"  # PyTriton's model store and sockets; made anew
    shutil.rmtree(workspace, ignore_errors=True)
    port, grpc_port, metrics_port = procs.free_port(), procs.free_port(), procs.free_port()
    command = [
        str(TRITON.bin("python")),
        str(PEERS_DIR / "triton_server.py"),
        *("--card", str(workload.card), "--port", str(port), "--threads", str(threads)),
        *("--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)),
        *("--workspace", str(workspace), "--max-batch-size", str(TRITON_MAX_BATCH)),
        *("--queue-delay-us", str(TRITON_QUEUE_DELAY_US)),
    ]
    server = procs.start(
        "triton", command, env=_cpu_env(threads), log_path=workdir / "server.log", cwd=workdir
    )
    base = f"http://127.0.0.1:{port}/v2/models/{workload.card.stem}"
    return Running(
        server,
        f"{base}/ready",  # the server is ready before PyTriton has loaded the model
        f"{base}/infer",
        workload.triton.body,
        "application/octet-stream",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        headers=workload.triton.headers,
        batch_totals=triton_batch_totals,
    )


def archive_for_torchserve(workload: Workload, workdir: Path, threads: int) -> Path:
    """A model store holding cnn.mar: the handler, peer_model.py, the card and weights."""
    store = workdir / "model-store"
    staging = workdir / "staging"
    for folder in (store, staging):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    card = json.loads(workload.card.read_text())
    for name in (workload.card.name, card["weights_file"]):
        shutil.copy(workload.card.parent / name, staging / name)
    settings = {"card": workload.card.name, "threads": threads}
    (staging / "bench_settings.json").write_text(json.dumps(settings))
    extra = [PEERS_DIR / "peer_model.py", *sorted(staging.iterdir())]
    command = [
        str(peer_bin("torch-model-archiver")),
        *("--model-name", TS_MODEL, "--version", "1.0", "--export-path", str(store)),
        *("--handler", str(PEERS_DIR / "torchserve_handler.py")),
        *("--extra-files", ",".join(str(p) for p in extra), "--force"),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return store


def _torchserve_config(workdir: Path, store: Path, ports: tuple[int, int, int]) -> Path:
    model = {
        "1.0": {
            "defaultVersion": True,
            "marName": f"{TS_MODEL}.mar",
            "minWorkers": 1,
            "maxWorkers": 1,
            "batchSize": 32,
            "maxBatchDelay": 10,
            "responseTimeout": 120,
        }
    }
    lines = [
        f"inference_address=http://127.0.0.1:{ports[0]}",
        f"management_address=http://127.0.0.1:{ports[1]}",
        f"metrics_address=http://127.0.0.1:{ports[2]}",
        f"model_store={store}",
        f"load_models={TS_MODEL}.mar",
        f"models={json.dumps({TS_MODEL: model})}",
        "default_workers_per_model=1",
        "install_py_dep_per_model=false",
        "disable_system_metrics=true",
        "job_queue_size=1000",
    ]
    path = workdir / "config.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def _torchserve(workload: Workload, workdir: Path, threads: int) -> Running:
    store = archive_for_torchserve(workload, workdir, threads)
    ports = (procs.free_port(), procs.free_port(), procs.free_port())
    config = _torchserve_config(workdir, store, ports)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    command = [
        str(peer_bin("torchserve")),
        *("--start", "--foreground", "--ncs", "--disable-token-auth"),
        *("--model-store", str(store), "--ts-config", str(config)),
    ]
    env = {**_cpu_env(threads), "TMPDIR": str(tmp), "LOG_LOCATION": str(workdir / "logs")}
    env["METRICS_LOCATION"] = str(workdir / "logs")
    server = procs.start(
        "torchserve", command, env=env, log_path=workdir / "server.log", cwd=workdir
    )
    base = f"http://127.0.0.1:{ports[0]}"
    return Running(
        server,
        f"{base}/ping",
        f"{base}/predictions/{TS_MODEL}",
        workload.body,
        workload.content_type,
    )
