"""Several HTTP workers and one engine: the parent process that starts, watches and stops them.

The parent binds the listening socket and hands it to every HTTP worker (the
kernel spreads connections over the processes accepting on it); it starts the
engine first and the workers once the engine is warm. It never imports torch.

- A worker that dies is replaced; the others keep serving meanwhile.
- An engine that dies is restarted; each worker fails its requests in flight at
  once (503 engine_unavailable), answers /readyz 503, and reconnects when the new
  engine is warm.
- SIGTERM (or SIGINT) drains the workers first (each answers what it accepted,
  as the single-process server does), then stops the engine, then exits 0.
- Children die with the parent, even a parent killed with SIGKILL (service.children).
- A start-up failure of the engine (its one line is already on stderr) ends
  the parent with exit code 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from service.children import PARENT_ENV
from service.logs import configure_logging
from service.settings import Settings

log = logging.getLogger("service.supervisor")

POLL_S = 0.05
RESTART_DELAY_S = 0.5
BACKLOG = 2048


def _run_dir(settings: Settings) -> Path:
    """Sockets, arenas and metric files: in memory (/dev/shm) where the system has it."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else settings.temp_dir
    return Path(tempfile.mkdtemp(prefix="cnn-serve-", dir=base))


def _listen(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((settings.host, settings.port))
    listener.listen(BACKLOG)
    listener.set_inheritable(True)
    return listener


class Supervisor:
    def __init__(self, settings: Settings, workers: int, env: dict[str, str]) -> None:
        self.settings = settings
        self.count = workers
        self.run_dir = _run_dir(settings)
        metrics_dir = self.run_dir / "metrics"
        metrics_dir.mkdir()
        self.engine_socket = self.run_dir / "engine.sock"
        self.env = {
            **env,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            PARENT_ENV: str(os.getpid()),
        }
        self.listener = _listen(settings)
        self.engine: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    # ---- children ----------------------------------------------------------

    def _spawn(
        self,
        module: str,
        *args: str,
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        # -P: `python -m` would put the working directory first on sys.path, where a folder
        # named like one of our packages (./models, say) would hide it.
        return subprocess.Popen(
            [sys.executable, "-P", "-m", module, *args],
            env={**self.env, **(env or {})},
            pass_fds=tuple(pass_fds),
        )

    def start_engine(self) -> int:
        """Start the engine; the pipe on which it says it is warm (see `engine_ready`)."""
        self.engine_socket.unlink(missing_ok=True)
        ready_read, ready_write = os.pipe()
        # OpenMP's threads sleep between forward passes instead of spinning: spinning, they
        # took the cores the HTTP workers parse and decode on (W1 at c=64 on 2 cores: 2,166
        # req/s spinning, 2,696 passive). A value set by the operator wins.
        passive = {"OMP_WAIT_POLICY": self.env.get("OMP_WAIT_POLICY", "PASSIVE")}
        self.engine = self._spawn(
            "service.engine_process", str(self.engine_socket), str(ready_write),
            pass_fds=[ready_write], env=passive,
        )  # fmt: skip
        os.close(ready_write)
        return ready_read

    @staticmethod
    def engine_ready(ready_read: int) -> bool:
        """Wait until the engine is warm (True) or has ended without getting there (False)."""
        with os.fdopen(ready_read, "rb") as ready:
            return ready.readline() == b"ready\n"  # empty: it ended first

    def start_worker(self) -> subprocess.Popen[bytes]:
        fd = self.listener.fileno()
        worker = self._spawn("service.http_worker", str(fd), str(self.engine_socket), pass_fds=[fd])
        self.workers.append(worker)
        return worker

    # ---- the loop ----------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            ready = self.start_engine()
            # The workers start beside the engine: their imports overlap its loading and
            # warm-up, and they connect once it listens (ready).
            for _ in range(self.count):
                self.start_worker()
            if not self.engine_ready(ready):
                return 1  # the engine printed its one line; the workers are killed below
            log.info(
                "supervising",
                extra={"workers": self.count, "port": self.settings.port, "pid": os.getpid()},
            )
            while not self.stopping:
                self._replace_the_dead()
                time.sleep(POLL_S)
            self._stop()
            return 0
        finally:
            self._kill_all()
            self.listener.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _forget(self, pid: int) -> None:
        """Drop a dead process's live gauges (its counters stay in the pod's sums) and the
        shared-memory arena it had no chance to remove."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.env["PROMETHEUS_MULTIPROC_DIR"])  # type: ignore[no-untyped-call]
        (self.run_dir / f"arena-{pid}").unlink(missing_ok=True)

    def _replace_the_dead(self) -> None:
        for worker in list(self.workers):
            if worker.poll() is not None and not self.stopping:
                log.error("HTTP worker ended; starting another", extra={"pid": worker.pid,
                          "exit_code": worker.returncode})  # fmt: skip
                self.workers.remove(worker)
                self._forget(worker.pid)
                time.sleep(RESTART_DELAY_S)
                self.start_worker()
        engine = self.engine
        if engine is not None and engine.poll() is not None and not self.stopping:
            log.error("engine ended; restarting it", extra={"pid": engine.pid,
                      "exit_code": engine.returncode})  # fmt: skip
            self._forget(engine.pid)
            time.sleep(RESTART_DELAY_S)
            while not self.stopping and not self.engine_ready(self.start_engine()):
                time.sleep(RESTART_DELAY_S)

    def _stop(self) -> None:
        """Workers first (they answer what they accepted), then the engine that computes it."""
        grace = self.settings.shutdown_drain_s + self.settings.shutdown_grace_s + 5.0
        # Our copy of the listening socket goes first: once the workers have closed theirs,
        # the port refuses new connections instead of queueing them for nobody.
        self.listener.close()
        for worker in self.workers:
            _signal(worker, signal.SIGTERM)
        _wait_all(self.workers, grace)
        if self.engine is not None:
            _signal(self.engine, signal.SIGTERM)
            _wait_all([self.engine], self.settings.shutdown_grace_s + 5.0)

    def _kill_all(self) -> None:
        for child in [*self.workers, *([self.engine] if self.engine else [])]:
            if child.poll() is None:
                child.kill()
                child.wait()


def _signal(child: subprocess.Popen[bytes], sig: int) -> None:
    if child.poll() is None:
        child.send_signal(sig)


def _wait_all(children: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    end = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("child did not stop in time; killing it", extra={"pid": child.pid})
            child.kill()
            child.wait()


def supervise(settings: Settings, workers: int, env: dict[str, str]) -> int:
    configure_logging(settings.log_level, settings.log_format)
    try:
        supervisor = Supervisor(settings, workers, env)
    except OSError as exc:
        print(f"cnn-serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return supervisor.run()
