"""Rollout: a new model version published into a polled repository while clients keep asking.

    .venv/bin/python -m bench.rollout [--duration 20] [--clients 16] [--workers 1 2]

For each process layout (CNN_WORKERS=1, then 2) cnn-serve starts on a model repository
holding resnet18 with random weights (bench.workloads.resnet18_card) as version 1, with
CNN_MODEL_CONTROL=poll, CNN_REPOSITORY_POLL_S=0.5 and CNN_REQUEST_TIMEOUT_S=5. A closed
loop of --clients threads posts one MNIST digit (PNG) to /v1/classify, back to back, for
--duration seconds; a third of the way in, version 2 (a copy of version 1) is published
by rename. Every answer is kept: when its request left, when its answer came, its status
and the "version" it names.

Printed per layout: requests, failures (non-200 answers and transport errors), req/s,
the time from the publish to the first version-2 answer, whether the switch happened at
one point in time (every request sent after the first version-2 answer arrived got
version 2), and the resident memory of the process holding the models (the server, or
its engine process) before the publish, at its peak while both versions are loaded, and
once the old one is stopped (CNN_REQUEST_TIMEOUT_S + 2 s after the switch). It exits 1
when a request failed, version 2 was never reached, or the switch was not clean.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import procs
from bench.workloads import mnist_pngs, resnet18_card
from models.repository import publish_version

ROOT = Path(__file__).resolve().parent
POLL_S = 0.5
REQUEST_TIMEOUT_S = 5.0
AFTER_RETIRE_S = 2.0  # memory is read this long after the old version's stop
SAMPLE_EVERY_S = 0.1


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() as the request left
    received: float  # as its answer, or its failure, came back
    status: int  # 0: no answer (a transport error)
    version: str | None  # the answer's "version"
    error: str = ""


@dataclass
class Rollout:
    """One rollout under load: every answer, and the process's memory over time."""

    answers: list[Answer]
    started: float
    published: float  # when the new version's folder was renamed into place
    ended: float  # when the last client stopped
    new_version: str
    memory: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes)

    @property
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    @property
    def switched(self) -> float | None:
        """When the first answer from the new version arrived."""
        times = [a.received for a in self.answers if a.version == self.new_version]
        return min(times, default=None)

    def late(self) -> list[Answer]:
        """Requests sent after the switch that an older version still answered."""
        switched = self.switched
        if switched is None:
            return []
        return [
            a
            for a in self.answers
            if a.sent > switched and a.status == 200 and a.version != self.new_version
        ]

    def versions(self) -> dict[str | None, int]:
        counts: dict[str | None, int] = {}
        for answer in self.answers:
            counts[answer.version] = counts.get(answer.version, 0) + 1
        return counts

    @property
    def requests_per_s(self) -> float:
        return len(self.answers) / (self.ended - self.started)

    def rss(self, start: float, end: float) -> int | None:
        """The highest memory sample within [start, end)."""
        return max((b for t, b in self.memory if start <= t < end), default=None)

    def rss_before(self) -> int | None:
        before = [b for t, b in self.memory if t <= self.published]
        return before[-1] if before else None

    def rss_after(self, at: float) -> int | None:
        """The first memory sample at or after `at`."""
        return next((b for t, b in self.memory if t >= at), None)


def run_rollout(
    base_url: str,
    body: bytes,
    publish: Callable[[], object],
    *,
    duration_s: float,
    clients: int = 16,
    publish_at_s: float | None = None,
    new_version: str = "2",
    content_type: str = "image/png",
    path: str = "/v1/classify",
    memory: Callable[[], int] | None = None,
    settle_s: float = 0.0,
    max_wait_s: float = 120.0,
    request_timeout_s: float = 60.0,
) -> Rollout:
    """A closed loop of `clients` posting `body` for `duration_s`; `publish()` at `publish_at_s`
    (default: a third of the way in).

    The loop runs on past `duration_s` until the first answer from `new_version` (at most
    `max_wait_s` more); `memory()`, when given, is sampled throughout, and on until
    `settle_s` after that first answer.
    """
    url = f"{base_url}{path}"
    headers = {"content-type": content_type}
    stop = threading.Event()
    lock = threading.Lock()
    first_new: list[float] = []
    answered: list[list[Answer]] = [[] for _ in range(clients)]

    def client(mine: list[Answer]) -> None:
        with httpx.Client(timeout=request_timeout_s) as http:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = http.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    mine.append(Answer(sent, time.monotonic(), 0, None, repr(exc)))
                    continue
                received = time.monotonic()
                version = None
                error = ""
                if response.status_code == 200:
                    version = response.json().get("version")
                else:
                    error = response.text[:200]
                mine.append(Answer(sent, received, response.status_code, version, error))
                if version == new_version and not first_new:
                    with lock:
                        first_new.append(received)

    samples: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        assert memory is not None
        while not sampling.is_set():
            samples.append((time.monotonic(), memory()))
            time.sleep(SAMPLE_EVERY_S)

    sampler = threading.Thread(target=sample, daemon=True) if memory is not None else None
    if sampler is not None:
        sampler.start()
        time.sleep(SAMPLE_EVERY_S)
    threads = [threading.Thread(target=client, args=(mine,)) for mine in answered]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(max(0.0, started + (publish_at_s or duration_s / 3) - time.monotonic()))
        publish()
        published = time.monotonic()
        deadline = started + duration_s
        while time.monotonic() < deadline or (
            not first_new and time.monotonic() < deadline + max_wait_s
        ):
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    ended = time.monotonic()
    if sampler is not None:
        if first_new:
            time.sleep(max(0.0, first_new[0] + settle_s + SAMPLE_EVERY_S - time.monotonic()))
        sampling.set()
        sampler.join()
    answers = sorted((a for mine in answered for a in mine), key=lambda a: a.sent)
    return Rollout(answers, started, published, ended, new_version, samples)


# ---- the repository ---------------------------------------------------------------


def copy_checkpoint(card: Path, folder: Path) -> None:
    """A card and its weights file into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = json.loads(card.read_text())["weights_file"]
    shutil.copy(card, folder / card.name)
    shutil.copy(card.parent / weights, folder / weights)


def publish_copy(root: Path, name: str, card: Path) -> str:
    """Publish a copy of `card` as the next version of `name`, by rename; its number."""
    return publish_version(root, name, lambda folder, _: copy_checkpoint(card, folder)).name


# ---- the bench --------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc (0 once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def model_process(pid: int, workers: int) -> int:
    """The process holding the models: the server itself, or its engine process."""
    if workers == 1:
        return pid
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for member in procs.process_tree(pid):
            try:
                argv = Path(f"/proc/{member}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"service.engine_process" in argv:
                return member
        time.sleep(0.1)
    raise RuntimeError(f"no engine process under {pid}")


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MB"


def report(rollout: Rollout, *, workers: int, retire_s: float) -> list[str]:
    switched = rollout.switched
    failures = rollout.failures
    lines = [
        f"CNN_WORKERS={workers}: {len(rollout.answers)} requests in "
        f"{rollout.ended - rollout.started:.1f} s, {rollout.requests_per_s:.1f} req/s, "
        f"{len(failures)} failures",
        "  answers by version: "
        + ", ".join(f"{v}: {n}" for v, n in sorted(rollout.versions().items(), key=str)),
    ]
    if failures:
        kinds: dict[str, int] = {}
        for failure in failures:
            key = f"{failure.status} {failure.error[:80]}"
            kinds[key] = kinds.get(key, 0) + 1
        lines += [f"  failure x{n}: {kind}" for kind, n in sorted(kinds.items())]
    if switched is None:
        lines.append(f"  version {rollout.new_version} never answered")
        return lines
    late = rollout.late()
    lines += [
        f"  switch: first version-{rollout.new_version} answer "
        f"{switched - rollout.published:.2f} s after the publish",
        f"  requests sent after the switch answered by an older version: {len(late)}"
        + (" (one point in time)" if not late else ""),
        f"  RSS of the model process: before the publish {_mb(rollout.rss_before())}, "
        f"peak while both versions are loaded {_mb(rollout.rss(switched, switched + retire_s))}, "
        f"peak while loading {_mb(rollout.rss(rollout.published, switched))}, "
        f"after the old one is stopped "
        f"{_mb(rollout.rss_after(switched + retire_s + AFTER_RETIRE_S))}",
    ]
    return lines


def bench_layout(
    workers: int, card: Path, body: bytes, *, duration_s: float, clients: int, workdir: Path
) -> tuple[Rollout, list[str]]:
    name = card.stem
    root = workdir / f"repository-{workers}"
    copy_checkpoint(card, root / name / "1")
    port = procs.free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        "CNN_MODEL_REPOSITORY": str(root),
        "CNN_MODEL_CONTROL": "poll",
        "CNN_REPOSITORY_POLL_S": str(POLL_S),
        "CNN_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
        "CNN_WORKERS": str(workers),
        "CNN_LOG_LEVEL": "warning",
    }
    command = [str(Path(sys.executable).with_name("cnn-serve"))]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    server = procs.start(
        f"cnn-serve workers={workers}", command, env=env, log_path=workdir / f"server-{workers}.log"
    )
    try:
        procs.wait_ready(server, f"{base_url}/readyz")
        holder = model_process(server.pid, workers)
        rollout = run_rollout(
            base_url,
            body,
            lambda: publish_copy(root, name, card),
            duration_s=duration_s,
            clients=clients,
            memory=lambda: rss_bytes(holder),
            settle_s=REQUEST_TIMEOUT_S + AFTER_RETIRE_S,
        )
    finally:
        procs.stop(server)
    return rollout, report(rollout, workers=workers, retire_s=REQUEST_TIMEOUT_S)


def summary(
    *, duration_s: float = 20.0, clients: int = 16, layouts: tuple[int, ...] = (1, 2)
) -> tuple[bool, list[str]]:
    """Every layout's rollout: whether each was clean, and the report's lines."""
    card = resnet18_card(ROOT / "out" / "rollout" / "resnet18")
    body = mnist_pngs(1)[0]
    lines = [
        f"rollout: {card.stem} (random init), {clients} clients, {duration_s:.0f} s per "
        f"layout, one {len(body)}-byte PNG per request, version 2 published at a third"
    ]
    clean = True
    with tempfile.TemporaryDirectory(prefix="rollout-") as tmp:
        for workers in layouts:
            rollout, report_lines = bench_layout(
                workers, card, body, duration_s=duration_s, clients=clients, workdir=Path(tmp)
            )
            lines += report_lines
            clean &= not rollout.failures and rollout.switched is not None and not rollout.late()
    return clean, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rollout", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per layout")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="CNN_WORKERS")
    args = parser.parse_args(argv)
    clean, lines = summary(
        duration_s=args.duration, clients=args.clients, layouts=tuple(args.workers)
    )
    print("\n".join(lines))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
