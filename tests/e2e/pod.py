"""`cnn-serve --workers N` seen from outside: its processes, from /proc, and their metric files."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from tests.helpers import ServerProcess
from tests.reliability.raw_http import address
from tests.reliability.test_stalled_uploads import wait_for
from tests.service.test_metrics import Samples, parse

WORKERS = 2
WORKER_ARGS = ["--workers", str(WORKERS)]
PNG = {"content-type": "image/png"}
CLASSIFY = "/v1/classify"


def children(pid: int) -> set[int]:
    """The live children of a process (Linux: /proc/PID/task/*/children)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the task ended meanwhile
            found.update(int(child) for child in (task / "children").read_text().split())
    return found


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return {}
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


def started_by(supervisor: int) -> set[int]:
    """Every live process started for this supervisor, wherever it was reparented to."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return {
        pid
        for pid in pids
        if environment(pid).get("CNN_SUPERVISOR_PID") == str(supervisor) and not is_zombie(pid)
    }


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


@dataclass(frozen=True)
class Pod:
    """The processes of one multi-process server, at one moment."""

    supervisor: int
    engine: int  # 0 while there is none
    workers: frozenset[int]
    run_dir: Path  # the engine socket's folder: the arenas, the metric files
    metrics_dir: Path  # PROMETHEUS_MULTIPROC_DIR of every child


def pod_now(supervisor: int) -> Pod:
    """The supervisor's children by their module (`python -m MODULE ...`)."""
    found: dict[str, set[int]] = {"service.engine_process": set(), "service.http_worker": set()}
    run_dir = metrics_dir = Path()
    for pid in children(supervisor):
        line = command_line(pid)
        module, *args = line[line.index("-m") + 1 :] if "-m" in line else [""]
        if module in found:
            found[module].add(pid)
            socket_path = args[0] if module == "service.engine_process" else args[1]
            run_dir = Path(socket_path).parent
            metrics_dir = Path(environment(pid).get("PROMETHEUS_MULTIPROC_DIR", ""))
    engines = found["service.engine_process"]
    assert len(engines) <= 1, engines
    engine = next(iter(engines), 0)
    return Pod(supervisor, engine, frozenset(found["service.http_worker"]), run_dir, metrics_dir)


def whole_pod(server: ServerProcess, workers: int = WORKERS) -> Pod:
    """The pod once its engine and all `workers` HTTP workers are running."""

    def whole() -> bool:
        pod = pod_now(server.process.pid)
        return pod.engine != 0 and len(pod.workers) == workers

    assert wait_for(whole, 60), server.log()[-3000:]
    return pod_now(server.process.pid)


def served_by(pod: Pod, pid: int, endpoint: str = CLASSIFY) -> float:
    """Requests to `endpoint` answered 200 by one process, read from its own counter file."""
    source = pod.metrics_dir / f"counter_{pid}.db"
    with tempfile.TemporaryDirectory() as alone:
        try:
            shutil.copy(source, alone)
        except FileNotFoundError:  # nothing counted yet
            return 0.0
        collected = MultiProcessCollector(None, path=alone).collect()  # type: ignore[no-untyped-call]
        return sum(
            sample.value
            for family in collected
            for sample in family.samples
            if sample.name == "cnn_requests_total"
            and sample.labels.get("endpoint") == endpoint
            and sample.labels.get("code") == "200"
        )


def scrape(base_url: str) -> Samples:
    response = httpx.get(f"{base_url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return parse(response.text)


def scrape_counting(base_url: str, requests: float, **labels: str) -> Samples:
    """A scrape once cnn_requests_total with these labels has reached `requests`.

    A process counts a request just after its answer has left, so a scrape sent the moment
    the answer arrives (to another worker, say) may come a moment early. The tests then
    assert the exact values this scrape holds.
    """
    found: list[Samples] = []

    def counted() -> bool:
        found.append(scrape(base_url))
        return total(found[-1], "cnn_requests_total", **labels) >= requests

    wait_for(counted, 10)
    return found[-1]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric over the series that carry these labels (0 when there is none)."""
    wanted = set(labels.items())
    return sum(value for (n, series), value in samples.items() if n == name and wanted <= series)


def classify_one(base_url: str, png: bytes, timeout: float = 30) -> httpx.Response:
    """One classification on a connection of its own (so any worker may take it)."""
    return httpx.post(f"{base_url}{CLASSIFY}", content=png, headers=PNG, timeout=timeout)


def problem_code(response: httpx.Response) -> str:
    """ "200", or the status and the problem's code: "503 overloaded"."""
    if response.status_code == 200:
        return "200"
    return f"{response.status_code} {response.json().get('code', '')}"


def port_is_free(base_url: str) -> bool:
    """Nothing listens on the server's port: a connection is refused and the port can be bound."""
    host, port = address(base_url)
    try:
        socket.create_connection((host, port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        pass
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    return True
