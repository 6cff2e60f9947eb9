"""`cnn-serve --workers N` seen from outside: its processes, from /proc, and their metric files."""

from __future__ import annotations

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
PNG = {"content-type": "image/png"}
CLASSIFY = "/v1/classify"


def children(pid: int) -> set[int]:
    """The live children of a process (Linux: /proc/PID/task/*/children)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:  # the task ended meanwhile
            pass
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
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != supervisor:
            if environment(int(entry.name)).get("CNN_SUPERVISOR_PID") == str(supervisor):
                if not is_zombie(int(entry.name)):
                    found.add(int(entry.name))
    return found


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
    engine: int
    workers: frozenset[int]

    @property
    def run_dir(self) -> Path:
        """Where the engine socket, the arenas and the metric files are (the engine's argument)."""
        return Path(command_line(self.engine)[3]).parent

    @property
    def metrics_dir(self) -> Path:
        return Path(environment(self.engine)["PROMETHEUS_MULTIPROC_DIR"])


def pod_now(supervisor: int) -> Pod:
    by_module: dict[str, set[int]] = {"service.engine_process": set(), "service.http_worker": set()}
    for pid in children(supervisor):
        line = command_line(pid)
        if len(line) > 2 and line[2] in by_module:
            by_module[line[2]].add(pid)
    engines = by_module["service.engine_process"]
    assert len(engines) <= 1, engines
    return Pod(supervisor, next(iter(engines), 0), frozenset(by_module["service.http_worker"]))


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


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric over the series that carry these labels (0 when there is none)."""
    wanted = set(labels.items())
    return sum(value for (n, series), value in samples.items() if n == name and wanted <= series)


def classify_one(base_url: str, png: bytes, timeout: float = 30) -> httpx.Response:
    """One classification on a connection of its own (so any worker may take it)."""
    return httpx.post(f"{base_url}{CLASSIFY}", content=png, headers=PNG, timeout=timeout)


def problem_code(response: httpx.Response) -> str:
    """"200", or the status and the problem's code: "503 overloaded"."""
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
