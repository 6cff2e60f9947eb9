"""Where the time goes: py-spy samples of cnn-serve under load, grouped and summed.

py-spy writes collapsed stacks ("thread (TID): NAME;frame;frame COUNT"). Each
sample is charged to one category, by the first frame from the leaf upward
that a rule recognises, and to its thread. With the server's CPU time over
the same window and the requests answered, each share becomes CPU
milliseconds per request.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\d+\): (?P<name>.*)$")

# (category, path fragments): the first rule matching a frame wins.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model forward (torch, engine)", ("torch/", "service/engine.py")),
    (
        "decode + preprocess (PIL, numpy)",
        ("PIL/", "numpy/", "service/imaging.py", "models/preprocess.py", "service/pipeline.py"),
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


def _ms(share: float, cpu_ms_per_req: float | None) -> str:
    return "n/a" if cpu_ms_per_req is None else f"{share * cpu_ms_per_req:.3f}"


def profile_lines(profile: dict[str, Any] | None) -> list[str]:
    """The RESULTS.md section for a profile made by run.py (see run.profile_ours)."""
    if not profile or not profile.get("samples"):
        reason = (profile or {}).get("error", "not run (--no-profile)")
        return ["## Where the time goes", "", f"No profile in this run: {reason}.", ""]
    per_req = profile.get("cpu_ms_per_req")
    lines = [
        f"## Where the time goes: py-spy on cnn-serve under {profile['load']}",
        "",
        f"py-spy {profile['py_spy']} sampled the server at {profile['rate_hz']} Hz (nonblocking,",
        f"active threads only) for {profile['seconds']:.0f} s while it answered "
        f"{profile['req_s']:,.0f} req/s. The server's",
        f"process used {profile['server_cpu_s']:.2f} CPU-seconds for {profile['requests']:,} "
        f"requests: **{_fmt(per_req)} ms of CPU per request**",
        f"(at {profile['cores']} cores this caps throughput near "
        f"{_cap(per_req, profile['cores'])} req/s with no other process on the machine).",
        "Each sample is charged to the first frame from the leaf up that a rule in",
        "bench/profile.py recognises.",
        "",
        "| what the server was doing | share of samples | CPU ms per request |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {s:.1%} | {_ms(s, per_req)} |" for k, s in profile["categories"]]
    lines += ["", "| thread | share of samples |", "|---|---|"]
    lines += [f"| {k} | {s:.1%} |" for k, s in profile["threads"]]
    lines += ["", "Top frames by own time (leaf frames):", "", "| frame | share |", "|---|---|"]
    lines += [f"| `{k}` | {s:.1%} |" for k, s in profile["top_self"]]
    lines += ["", "Our functions, inclusive time:", "", "| function | share |", "|---|---|"]
    lines += [f"| `{k}` | {s:.1%} |" for k, s in profile["top_ours_inclusive"]]
    return [*lines, "", *_gil_lines(profile.get("gil"))]


def _gil_lines(gil: dict[str, Any] | None) -> list[str]:
    """The same load sampled with --gil: only the thread holding the GIL, at each sample."""
    if not gil or not gil.get("samples"):
        return []
    lines = [
        "### Who holds the GIL (py-spy --gil, same load, the next window)",
        "",
        "A thread that py-spy sees as active may be waiting to take the GIL back after a call",
        "that released it (a socket write, os.urandom, epoll): the table above counts that",
        "wait where it happened. Sampling only the GIL holder shows the Python work that",
        f"serializes the process ({gil['req_s']:,.0f} req/s during this window).",
        "",
        "| what the GIL holder was doing | share of samples |",
        "|---|---|",
    ]
    lines += [f"| {k} | {s:.1%} |" for k, s in gil["categories"]]
    lines += ["", "| thread | share |", "|---|---|"]
    lines += [f"| {k} | {s:.1%} |" for k, s in gil["threads"]]
    lines += ["", "| leaf frame | share |", "|---|---|"]
    lines += [f"| `{k}` | {s:.1%} |" for k, s in gil["top_self"][:12]]
    return [*lines, ""]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _cap(cpu_ms_per_req: float | None, cores: int) -> str:
    if not cpu_ms_per_req:
        return "n/a"
    return f"{cores * 1000 / cpu_ms_per_req:,.0f}"
