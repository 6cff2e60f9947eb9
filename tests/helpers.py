"""Test helpers: real MNIST digits as image files, free ports, a real server process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from models.data import DEFAULT_SEED, mnist_split

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@dataclass(frozen=True)
class Digits:
    images: list[Image.Image]
    labels: np.ndarray

    def png(self, index: int) -> bytes:
        return png_bytes(self.images[index])


_DIGITS: Digits | None = None


def held_out_digits() -> Digits:
    """The held-out test split of the shipped model (1,000 real MNIST digits), cached."""
    global _DIGITS
    if _DIGITS is None:
        split = mnist_split(DEFAULT_SEED)
        _DIGITS = Digits(split.test_images, split.test_labels)
    return _DIGITS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(
    tmp_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
    ready_timeout: float = 90.0,
    cwd: Path | None = None,
) -> Iterator[ServerProcess]:
    """Start `cnn-serve` as a real process on a free port (in `cwd`) and wait for /readyz.

    One process (CNN_WORKERS=1) unless `env` or `args` ask for HTTP workers: the tests of
    the multi-process server say so (tests/e2e/test_workers.py).
    """
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    full_env = {**os.environ, "CNN_LOG_LEVEL": "info", "CNN_WORKERS": "1", **(env or {})}
    command = [
        str(Path(sys.executable).with_name("cnn-serve")),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(args or []),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(server, ready_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout} s:\n{server.log()}")
