"""Soak: 20,000 mixed requests against a real cnn-serve; memory and file descriptors must settle.

    .venv/bin/python -m bench.soak [--requests 20000] [--concurrency 8] [--warm-up 2000]

Starts `cnn-serve` on 127.0.0.1 (a free port), sends a fixed, seeded mix of good and bad
requests (raw, multipart and JSON classification, feature maps, metadata, health, metrics,
and every kind of client error), and samples the server's RSS and open file descriptors
from /proc. After the warm-up, RSS may grow by less than 5 % and the descriptor count must
come back to where it was. It prints what it measured and a verdict; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import io
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from models.data import DEFAULT_SEED, mnist_split

PAGE = os.sysconf("SC_PAGE_SIZE")
RSS_GROWTH_LIMIT = 0.05
PNG = {"content-type": "image/png"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


Request = tuple[str, str, dict[str, Any]]  # kind, method + path, httpx keyword arguments


def request_mix(digits: list[bytes], seed: int) -> Callable[[], Request]:
    """A seeded generator of the mix: mostly good requests, one in eight a client error."""
    rng = random.Random(seed)
    b64 = [base64.b64encode(d).decode() for d in digits]

    def pick() -> bytes:
        return rng.choice(digits)

    kinds: list[tuple[int, Callable[[], Request]]] = [
        (40, lambda: ("classify raw", "POST /v1/classify", {"content": pick(), "headers": PNG})),
        (12, lambda: ("classify multipart x4", "POST /v1/models/mnist-cnn/classify?top_k=3",
                      {"files": [("images", (f"{i}.png", pick(), "image/png")) for i in range(4)]})),
        (10, lambda: ("classify JSON x2", "POST /v1/classify",
                      {"json": {"images": [rng.choice(b64), rng.choice(b64)]}})),
        (6, lambda: ("feature maps", "POST /v1/models/mnist-cnn/feature-maps?layers=conv1,conv5",
                     {"content": pick(), "headers": PNG})),
        (5, lambda: ("metadata", "GET /v1/models", {})),
        (5, lambda: ("health", rng.choice(["GET /healthz", "GET /readyz"]), {})),
        (3, lambda: ("metrics", "GET /metrics", {})),
        (4, lambda: ("bad: not an image", "POST /v1/classify",
                     {"content": b"not an image" * 20, "headers": PNG})),
        (3, lambda: ("bad: truncated", "POST /v1/classify",
                     {"content": pick()[:60], "headers": PNG})),
        (3, lambda: ("bad: JSON", "POST /v1/classify",
                     {"content": b'{"images": [', "headers": {"content-type": "application/json"}})),
        (3, lambda: ("bad: top_k", "POST /v1/classify?top_k=0", {"content": pick(), "headers": PNG})),
        (3, lambda: ("bad: unknown model", "POST /v1/models/nope/classify",
                     {"content": pick(), "headers": PNG})),
        (3, lambda: ("bad: media type", "POST /v1/classify",
                     {"content": pick(), "headers": {"content-type": "text/plain"}})),
    ]  # fmt: skip
    weights = [w for w, _ in kinds]
    makers = [m for _, m in kinds]
    return lambda: rng.choices(makers, weights)[0]()


@dataclass
class Tally:
    statuses: dict[str, collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    done: int = 0

    @property
    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for s, n in c.items() if s >= 500)


async def drive(
    base_url: str, next_request: Callable[[], Request], count: int, concurrency: int, tally: Tally
) -> None:
    # Fewer idle keep-alive slots than clients: connections keep opening and closing, which
    # is what would leak descriptors if anything did.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency // 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                kind, target, kwargs = next_request()
                method, path = target.split(" ", 1)
                try:
                    response = await client.request(method, path, **kwargs)
                    tally.statuses[kind][response.status_code] += 1
                except httpx.HTTPError as exc:
                    tally.errors[f"{kind}: {type(exc).__name__}"] += 1
                tally.done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def start_server(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("cnn-serve")), "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    env = {**os.environ, "CNN_LOG_LEVEL": "warning"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"cnn-serve exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"cnn-serve not ready within 120 s; see {log_path}")


def report(
    tally: Tally, samples: list[tuple[int, float, int]], warm_up: int, seconds: float
) -> None:
    print(f"\n{tally.done} requests in {seconds:.1f} s ({tally.done / seconds:.0f} req/s)")
    print(f"{'kind':<24} statuses")
    for kind in sorted(tally.statuses):
        counts = ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses[kind].items()))
        print(f"{kind:<24} {counts}")
    print(f"transport errors: {dict(tally.errors) or 'none'}; 5xx answers: {tally.server_errors}")
    print(f"\n{'requests':>9} {'RSS MB':>8} {'fds':>5}")
    for done, rss, fds in samples:
        print(f"{done:>9} {rss:>8.1f} {fds:>5}")
    warm = next(s for s in samples if s[0] >= warm_up)
    end = samples[-1]
    growth = (end[1] - warm[1]) / warm[1]
    fd_delta = end[2] - warm[2]
    print(
        f"\nRSS after warm-up ({warm[0]} requests): {warm[1]:.1f} MB; at the end: {end[1]:.1f} MB;"
    )
    print(f"growth {growth:+.2%} (limit {RSS_GROWTH_LIMIT:.0%}); open fds {warm[2]} -> {end[2]}")
    ok = growth < RSS_GROWTH_LIMIT and fd_delta <= 0 and tally.server_errors == 0
    ok = ok and not tally.errors
    print("verdict:", "PASS" if ok else "FAIL")


async def soak(args: argparse.Namespace, pid: int, base_url: str) -> None:
    split = mnist_split(DEFAULT_SEED)
    digits = [png(image) for image in split.test_images[:200]]
    next_request = request_mix(digits, seed=args.seed)
    tally = Tally()
    samples = [(0, rss_mb(pid), open_fds(pid))]
    started = time.perf_counter()
    step = 1000
    for done in range(0, args.requests, step):
        await drive(
            base_url, next_request, min(step, args.requests - done), args.concurrency, tally
        )
        await asyncio.sleep(0.2)  # let closed connections be reaped before counting descriptors
        samples.append((tally.done, rss_mb(pid), open_fds(pid)))
    report(tally, samples, args.warm_up, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warm-up", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    port = free_port()
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"cnn-serve-soak-{port}.log"
    process = start_server(port, log_path)
    print(f"cnn-serve pid {process.pid} on 127.0.0.1:{port}; log {log_path}")
    try:
        asyncio.run(soak(args, process.pid, f"http://127.0.0.1:{port}"))
    finally:
        process.terminate()
        print(f"server exit code after SIGTERM: {process.wait(timeout=60)}")


if __name__ == "__main__":
    main()
