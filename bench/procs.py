"""Server processes: start, wait for ready, measure memory and CPU, stop.

Memory and CPU are summed over the whole process tree: TorchServe is a Java
frontend plus Python workers, LitServe a manager plus API and inference
processes, and each is charged for all of them. On a GPU, nvidia-smi says which
processes hold device memory, and how much.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """The pid and all its descendants still alive."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(_children(current))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE


def tree_rss_mb(pid: int) -> float:
    return sum(_rss_bytes(p) for p in process_tree(pid)) / 2**20


def tree_rss_by_process(pid: int) -> list[tuple[str, float]]:
    """(role, RSS MB) of each process of the tree: its module or program name."""
    rows = []
    for member in process_tree(pid):
        try:
            argv = Path(f"/proc/{member}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in argv if w]
        role = words[words.index("-m") + 1] if "-m" in words else Path(words[0]).name
        rows.append((role, _rss_bytes(member) / 2**20))
    return rows


def _cpu_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


def tree_cpu_seconds(pid: int) -> float:
    return sum(_cpu_seconds(p) for p in process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / _CLOCK_TICKS


def http_status(url: str, *, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def http_get_text(url: str, *, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode("utf-8", errors="replace"))
    except (OSError, ValueError):
        return None


GpuProcess = tuple[int, int | None]  # pid, MiB of GPU memory (None: nvidia-smi says [N/A])
COMPUTE_APPS_QUERY = (
    "nvidia-smi",
    "--query-compute-apps=pid,used_memory",
    "--format=csv,noheader,nounits",
)


def parse_compute_apps(text: str) -> list[GpuProcess]:
    """nvidia-smi's `COMPUTE_APPS_QUERY` output: one "pid, MiB" line per process on a GPU.

    A process on two GPUs has a line for each. Lines that are not "pid, MiB" (a message in
    place of the rows, on some drivers) are skipped rather than failing the benchmark.
    """
    rows: list[GpuProcess] = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2 or not fields[0].isdigit():
            continue
        rows.append((int(fields[0]), int(fields[1]) if fields[1].isdigit() else None))
    return rows


def gpu_compute_apps(*, timeout: float = 10.0) -> list[GpuProcess] | None:
    """The processes holding GPU memory now; None where nvidia-smi is absent or fails."""
    if shutil.which(COMPUTE_APPS_QUERY[0]) is None:
        return None
    try:
        done = subprocess.run(
            COMPUTE_APPS_QUERY, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_compute_apps(done.stdout) if done.returncode == 0 else None


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    started_at: float
    log_path: Path
    ready_s: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(
    name: str,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
) -> Server:
    """Start a server in its own process group, so that stop() ends its whole tree."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
        )
    return Server(name, process, started, log_path)


def wait_ready(server: Server, url: str, *, timeout: float = 180.0) -> float:
    """Seconds from process start to the first 200 from `url`."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if http_status(url, timeout=1.0) == 200:
            server.ready_s = time.perf_counter() - server.started_at
            return server.ready_s
        time.sleep(0.02)
    raise RuntimeError(f"{server.name} not ready within {timeout:.0f} s:\n{server.log_tail()}")


def _group_running(group: int) -> bool:
    """Whether any process of the group still runs (a zombie has already exited). Read from
    /proc, not the tree: children whose parent died first have left the tree, not the group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            return True
    return False


def stop(server: Server, *, grace: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the grace period.

    The grace covers the whole tree: children still shutting down (a server whose main
    process died first, say) get their time too before SIGKILL cuts their clean-up short.
    """
    group = server.process.pid
    tree = process_tree(group)
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.perf_counter() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=grace)
    while time.perf_counter() < deadline and _group_running(group):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    server.process.wait()
    for pid in tree:
        # Only what is still in our group: a pid that exited may since belong to someone else.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == group:
                os.kill(pid, signal.SIGKILL)
