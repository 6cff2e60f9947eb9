"""Profiling cnn-serve under W1 at c=64 with py-spy while hey keeps it busy; summing the samples.

py-spy writes collapsed stacks ("thread (TID): NAME;frame;frame COUNT"). Each
sample is charged to one category, by the first frame from the leaf upward
that a rule recognises, and to its thread. With the server's CPU time over
the same window and the requests answered, each share becomes CPU
milliseconds per request (bench/profile_report.py renders them).

    python -m bench.profile_run   # the profile alone, merged into OUT/results.json
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, servers
from bench.hey import Load, hey_command, parse_hey, run_hey
from bench.peers.env import peer_bin
from bench.workloads import Workload

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\d+\): (?P<name>.*)$")

# (category, path fragments): the first rule matching a frame wins.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model forward (torch, engine)", ("torch/", "service/engine.py")),
    (
        "decode + preprocess (PIL, libpng, numpy)",
        (
            "PIL/",
            "imagecodecs/",
            "numpy/",
            "service/imaging.py",
            "service/png.py",
            "models/pixels.py",
            "models/preprocess.py",
            "service/pipeline.py",
        ),
    ),
    ("multipart parsing", ("multipart/", "starlette/formparsers.py")),
    ("response encoding (JSON)", ("orjson", "service/responses.py", "service/predictions.py")),
    ("batcher (queue, hand-off)", ("service/batching.py",)),
    (
        "metrics + logging",
        ("prometheus_client/", "logging/", "service/metrics.py", "service/logs.py"),
    ),
    ("HTTP protocol (uvicorn, httptools)", ("uvicorn/", "httptools", "h11/")),
    (
        "framework (FastAPI, Starlette, pydantic, our middleware + routers)",
        ("fastapi/", "starlette/", "pydantic", "anyio/", "service/"),
    ),
    ("asyncio event loop", ("asyncio/", "uvloop", "selectors.py")),
    ("threads (pool, locks)", ("threading.py", "concurrent/futures", "queue.py")),
)
OTHER = "other"
_OURS = ("service/", "models/")
_ENTRY = frozenset({"service/cli.py", "service/server.py"})  # under every main-thread sample


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @classmethod
    def parse(cls, text: str) -> Frame:
        match = _FRAME.match(text.strip())
        if match is None:
            return cls(text.strip(), "")
        return cls(match.group("func"), match.group("file"))

    @property
    def label(self) -> str:
        return f"{self.function} ({self.file})" if self.file else self.function


@dataclass(frozen=True)
class Stack:
    thread: str
    frames: tuple[Frame, ...]  # root first
    count: int


def parse_collapsed(text: str) -> list[Stack]:
    stacks = []
    for line in text.splitlines():
        body, _, count = line.rstrip().rpartition(" ")
        if not body or not count.isdigit():
            continue
        parts = body.split(";")
        thread = ""
        match = _THREAD.match(parts[0])
        if match:
            thread, parts = match.group("name"), parts[1:]
        stacks.append(Stack(thread, tuple(Frame.parse(p) for p in parts), int(count)))
    return stacks


def category(frames: Sequence[Frame]) -> str:
    for frame in reversed(frames):
        for name, fragments in RULES:
            if any(fragment in frame.file for fragment in fragments):
                return name
    return OTHER


def thread_group(name: str) -> str:
    """Pool threads are numbered; group them by their prefix."""
    return re.sub(r"[_-]\d+$", "", name) or "(unnamed)"


def _shares(counter: Counter[str], total: int, top: int | None = None) -> list[tuple[str, float]]:
    return [(key, n / total) for key, n in counter.most_common(top)]


def summarize(stacks: Sequence[Stack], *, top: int = 15) -> dict[str, Any]:
    """Shares of samples by category, thread, leaf frame, and our own functions (inclusive)."""
    total = sum(s.count for s in stacks)
    by_category: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    ours_inclusive: Counter[str] = Counter()
    for stack in stacks:
        by_category[category(stack.frames)] += stack.count
        by_thread[thread_group(stack.thread)] += stack.count
        if stack.frames:
            by_leaf[stack.frames[-1].label] += stack.count
        own = {f.label for f in stack.frames if f.file.startswith(_OURS) and f.file not in _ENTRY}
        for label in own:
            ours_inclusive[label] += stack.count
    if total == 0:
        return {"samples": 0}
    return {
        "samples": total,
        "categories": _shares(by_category, total),
        "threads": _shares(by_thread, total),
        "top_self": _shares(by_leaf, total, top),
        "top_ours_inclusive": _shares(ours_inclusive, total, top),
    }


RATE_HZ = 100
CONCURRENCY = 64


def _py_spy_version() -> str:
    done = subprocess.run([str(peer_bin("py-spy")), "--version"], capture_output=True, text=True)
    return done.stdout.strip().removeprefix("py-spy ") or "unknown"


def _record(pid: int, seconds: int, output: Path, *, gil: bool) -> subprocess.CompletedProcess[str]:
    command = [
        str(peer_bin("py-spy")),
        *("record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(RATE_HZ)),
        *("--nonblocking", "--threads", "--format", "raw", "--output", str(output)),
        *(("--gil",) if gil else ()),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)


def _profile_under_load(
    hey: str, running: servers.Running, seconds: int, output: Path, *, gil: bool = False
) -> dict[str, Any]:
    load = Load(running.predict_url, running.body, running.content_type, CONCURRENCY, seconds + 2)
    run_hey(hey, Load(load.url, load.body, load.content_type, CONCURRENCY, 3))  # warm-up
    with subprocess.Popen(hey_command(hey, load), stdout=subprocess.PIPE, text=True) as loader:
        time.sleep(1.0)  # let the load settle before sampling
        cpu_before = procs.tree_cpu_seconds(running.server.pid)
        started = time.perf_counter()
        recorded = _record(running.server.pid, seconds, output, gil=gil)
        elapsed = time.perf_counter() - started
        cpu = procs.tree_cpu_seconds(running.server.pid) - cpu_before
        stdout, _ = loader.communicate(timeout=seconds + 90)
    if recorded.returncode != 0 or not output.is_file():
        return {"error": f"py-spy failed: {recorded.stderr.strip()[-300:]}"}
    result = parse_hey(stdout)
    # hey's run spans the profile window plus a little; its rate stands for the window's.
    requests = round(result.req_s * elapsed)
    summary = summarize(parse_collapsed(output.read_text()))
    return {
        **summary,
        "seconds": elapsed,
        "server_cpu_s": cpu,
        "requests": requests,
        "req_s": result.req_s,
        "p99_ms": result.latency_ms(99),
        "cpu_ms_per_req": cpu * 1000 / requests if requests else None,
    }


def profile_ours(
    hey: str, workload: Workload, threads: int, out: Path, *, quick: bool
) -> dict[str, Any]:
    kind = servers.ServerKind("cnn-serve", "cnn-serve")
    workdir = out / "profile"
    running = servers.launch(kind, workload, workdir, threads=threads)
    seconds = 5 if quick else 15
    try:
        procs.wait_ready(running.server, running.ready_url)
        profile = _profile_under_load(hey, running, seconds, workdir / "py-spy.txt")
        # Only the thread holding the GIL: what bounds a Python-bound server.
        gil = _profile_under_load(hey, running, seconds, workdir / "py-spy-gil.txt", gil=True)
        profile["gil"] = gil
    except Exception as exc:
        profile = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        procs.stop(running.server)
    profile.update(
        load=f"W1 (one 28x28 PNG per request) at c={CONCURRENCY}",
        py_spy=_py_spy_version(),
        rate_hz=RATE_HZ,
        cores=len(os.sched_getaffinity(0)),
        raw=str(workdir / "py-spy.txt"),
    )
    return profile


def main() -> None:
    """Profile alone (no benchmark): merge into OUT/results.json, then --render-only."""
    import argparse
    import json

    from bench.hey import ensure_hey
    from bench.workloads import prepare

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    out = args.out.resolve()
    workload = prepare(out / "assets")["W1"]
    profile = profile_ours(ensure_hey(), workload, args.threads, out, quick=False)
    saved = out / "results.json"
    if saved.is_file():
        data = json.loads(saved.read_text())
        data["profile"] = profile
        saved.write_text(json.dumps(data, indent=1))
    print(json.dumps({k: v for k, v in profile.items() if k != "gil"}, indent=1)[:3000])


if __name__ == "__main__":
    main()
