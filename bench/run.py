"""One command runs the whole benchmark and writes bench/RESULTS.md.

    python -m bench.run            # full: 5 s warm-up + 15 s per point (~15 minutes)
    python -m bench.run --quick    # 1 s + 3 s per point (~3 minutes), to check a change

In-process ceilings first, then each server in turn (cnn-serve, TorchServe,
Triton, LitServe, a naive FastAPI server) under hey at each concurrency, then
a py-spy profile of cnn-serve under W1 at c=64. It prints and records; it
never asserts. `--servers`, `--concurrency` and `--seconds` narrow a run down
to a few points, e.g. one peer alone:

    python -m bench.run --servers triton --concurrency 64 --seconds 5 \
        --no-ceilings --no-profile --out /tmp/bench --results /tmp/bench/RESULTS.md

The report's prose is bench/report_template.md; a hand-written reading of a
run goes in bench/RESULTS-notes.md, whose first line names the run it reads
(`<!-- run started: ... -->`), and `--render-only` folds it in under that run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import NoReturn

from bench import ceiling, handoff, procs, rollout, servers
from bench.environment import machine_info, versions
from bench.explain_client import ExplainClient
from bench.gpu_section import load_gpu_results
from bench.hey import Load, ensure_hey, run_hey
from bench.peers.env import ensure_peer_env
from bench.profile_run import profile_ours
from bench.report import reading, render
from bench.results import Point, Results, ServerRun, SideBySide
from bench.scrape import HistogramTotals
from bench.targets import OURS, OURS_EXPLAINED
from bench.workloads import Workload, prepare

BENCH_DIR = Path(__file__).resolve().parent
SERVER_KINDS = (
    servers.ServerKind("cnn-serve", "cnn-serve (defaults: one process on 2 CPUs)"),
    servers.ServerKind(
        "cnn-serve 2 workers",
        "cnn-serve, CNN_WORKERS=2 (2 HTTP workers + engine)",
        {"CNN_WORKERS": "2"},
    ),
    servers.ServerKind("torchserve", "TorchServe 0.12 (batch 32, 10 ms)"),
    servers.ServerKind("triton", "Triton 2.51 through PyTriton 0.7 (batch 32, 1 ms)", w2=False),
    servers.ServerKind("litserve", "LitServe 0.2.19 (batch 32, 10 ms)"),
    servers.ServerKind("naive", "naive FastAPI (one request, one forward)"),
)
# W1 again, at one concurrency each: the costs of the debugging features.
W1_DEBUGGING_KINDS = (
    (servers.ServerKind("cnn-serve + explain client", "cnn-serve, one client explaining"), 32),
    (
        servers.ServerKind(
            "cnn-serve monitoring off",
            "cnn-serve, CNN_ACTIVATION_SAMPLE_RATE=0",
            {"CNN_ACTIVATION_SAMPLE_RATE": "0"},
        ),
        64,
    ),
)
W2_EXTRA_KINDS = (
    servers.ServerKind(
        "cnn-serve fp32", "cnn-serve, CNN_PRECISION=fp32", {"CNN_PRECISION": "fp32"}
    ),
    servers.ServerKind(
        "cnn-serve bf16", "cnn-serve, CNN_PRECISION=bf16", {"CNN_PRECISION": "bf16"}
    ),
)

# Rounds of 64 images a request against the in-process ceiling, side by side (full runs).
SIDE_BY_SIDE_ROUNDS = 3


@dataclass(frozen=True)
class Plan:
    quick: bool
    warm_s: float
    point_s: float
    threads: int
    w1_concurrency: tuple[int, ...] = (1, 8, 32, 64)
    triton_concurrency: tuple[int, ...] = (1, 32, 64)  # W1: the points the targets read
    w1v2_concurrency: tuple[int, ...] = (1, 64)  # cnn-serve's /v2, Triton's request
    w2_concurrency: tuple[int, ...] = (32,)
    w1x64_concurrency: int = 8

    @classmethod
    def make(
        cls,
        quick: bool,
        threads: int,
        *,
        concurrency: tuple[int, ...] = (),
        seconds: float | None = None,
    ) -> Plan:
        """`concurrency`: W1's alone, for every server; `seconds`: each measured point's."""
        plan = cls(quick, 1.0 if quick else 5.0, 3.0 if quick else 15.0, threads)
        if concurrency:
            plan = replace(plan, w1_concurrency=concurrency, triton_concurrency=concurrency)
        return plan if seconds is None else replace(plan, point_s=seconds)

    def w1_for(self, kind: servers.ServerKind) -> tuple[int, ...]:
        return self.triton_concurrency if kind.key == "triton" else self.w1_concurrency

    def as_settings(self) -> dict[str, object]:
        return {
            "warm-up per point": f"{self.warm_s:g} s (hey, same load, not recorded)",
            "measured per point": f"{self.point_s:g} s (hey -z)",
            "OMP threads (every server, the ceilings)": self.threads,
            "W1 concurrency": ", ".join(map(str, self.w1_concurrency)),
            "W1 concurrency, Triton": ", ".join(map(str, self.triton_concurrency)),
            "W1 V2 binary concurrency (cnn-serve)": ", ".join(map(str, self.w1v2_concurrency)),
            "W1 64 images/request concurrency": self.w1x64_concurrency,
            "W2 concurrency": ", ".join(map(str, self.w2_concurrency)),
            "cnn-serve": "defaults (max batch 32, delay 5 ms, preprocess workers = cores, "
            "torch threads = cores less one)",
            "TorchServe": "1 worker, batchSize 32, maxBatchDelay 10 ms, token auth off",
            "Triton": f"PyTriton, 1 instance, max_batch_size {servers.TRITON_MAX_BATCH}, "
            f"max_queue_delay {servers.TRITON_QUEUE_DELAY_US} us; W1 only",
            "LitServe": "1 worker, max_batch_size 32, batch_timeout 0.01; body JSON base64",
            "naive FastAPI": "sync endpoint in FastAPI's thread pool, one forward per request",
            "bodies": "raw image bytes (cnn-serve, TorchServe, naive); JSON base64 (LitServe); "
            "V2 binary, BYTES 'image' [1,1] asking top-5: the same bytes to Triton and cnn-serve (W1v2)",
        }


def first_answer(running: servers.Running, *, timeout: float = 120.0) -> float:
    """Seconds from process start to the first 200 answer to a real request."""
    body = running.body.read_bytes()
    headers = dict(header.split(": ", 1) for header in running.headers)
    headers["Content-Type"] = running.content_type
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        request = urllib.request.Request(running.predict_url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 200:
                    return time.perf_counter() - running.server.started_at
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{running.server.name}: no 200 answer within {timeout:.0f} s")


def _batch_totals(running: servers.Running) -> HistogramTotals | None:
    if running.metrics_url is None:
        return None
    text = procs.http_get_text(running.metrics_url)
    return running.batch_totals(text) if text else None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_point(
    hey: str, running: servers.Running, workload: Workload, server: str, c: int, plan: Plan
) -> Point:
    load = Load(
        running.predict_url, running.body, running.content_type, c, plan.warm_s,
        headers=running.headers,
    )  # fmt: skip
    run_hey(hey, load)  # warm-up at the same load, discarded
    batches_before = _batch_totals(running)
    server_before = procs.tree_cpu_seconds(running.server.pid)
    busy_before, hey_before = procs.machine_busy_seconds(), _children_cpu()
    result = run_hey(hey, replace(load, seconds=plan.point_s))
    server_cpu = procs.tree_cpu_seconds(running.server.pid) - server_before
    hey_cpu = _children_cpu() - hey_before
    other = procs.machine_busy_seconds() - busy_before - server_cpu - hey_cpu
    batches_after = _batch_totals(running)
    mean_batch = None
    if batches_before is not None and batches_after is not None:
        mean_batch = batches_after.minus(batches_before).mean
    return Point(
        workload.key, server, c, workload.images_per_request, result, mean_batch, server_cpu, other
    )


def bench_server(
    hey: str,
    kind: servers.ServerKind,
    workload: Workload,
    extra: list[tuple[Workload, int]],
    concurrencies: tuple[int, ...],
    plan: Plan,
    results: Results,
    out: Path,
) -> None:
    """Start one server, measure start-up, memory and every point, stop it."""
    workdir = out / "servers" / f"{workload.key}-{kind.key.replace(' ', '-')}"
    running = servers.launch(kind, workload, workdir, threads=plan.threads)
    run = ServerRun(workload.key, kind.key)
    try:
        ready = procs.wait_ready(running.server, running.ready_url)
        answered = first_answer(running)
        time.sleep(1.0)
        idle = procs.tree_rss_mb(running.server.pid)
        run = ServerRun(workload.key, kind.key, ready, answered, idle)
        print(f"  {kind.key}: ready {ready:.2f} s, idle RSS {idle:.0f} MB", flush=True)
        if kind.ours:
            worker_mb = _note_processes(results, f"{kind.key}, {workload.key}", running.server.pid)
            run = replace(run, largest_http_worker_rss_mb=worker_mb)
        loads = [(workload, c) for c in concurrencies] + extra
        with _companion(kind, running, workload, results):
            for load_workload, c in loads:
                target = (
                    running if load_workload is workload else running.for_workload(load_workload)
                )
                point = measure_point(hey, target, load_workload, kind.key, c, plan)
                results.points.append(point)
                _print_point(point)
        if kind.key == OURS:
            many = [(w, c) for w, c in extra if w.images_per_request > 1]
            side_by_side(hey, running, workload, many, plan, results)
        run = replace(run, rss_after_mb=procs.tree_rss_mb(running.server.pid))
    except Exception as exc:  # a peer that fails is recorded, the run goes on
        run = replace(run, error=f"{type(exc).__name__}: {exc}"[:300])
        print(f"  {kind.key}: FAILED {run.error}", flush=True)
    finally:
        procs.stop(running.server)
        results.runs.append(run)


def side_by_side(
    hey: str,
    running: servers.Running,
    workload: Workload,
    loads: list[tuple[Workload, int]],
    plan: Plan,
    results: Results,
) -> None:
    """Each load again, right after the in-process ceiling's "together" step on the same
    digits, for a few rounds: their ratio, taken seconds apart, is the server's cost and
    not the machine's drift between the ceilings' passes and the server's point."""
    found = results.ceiling(workload.key)
    if found is None or not loads:
        return
    print(f"  side by side with the in-process ceiling (batch {found.best_batch})", flush=True)
    meter = ceiling.together_meter(
        str(workload.card), workload.samples, threads=plan.threads, batch=found.best_batch
    )
    seconds = plan.point_s / 3
    short = replace(plan, warm_s=min(plan.warm_s, 1.0), point_s=seconds)
    for number in range(1, (1 if plan.quick else SIDE_BY_SIDE_ROUNDS) + 1):
        for load_workload, c in loads:
            ceiling_img_s = meter(seconds)
            target = running.for_workload(load_workload)
            point = measure_point(hey, target, load_workload, OURS, c, short)
            row = SideBySide(number, load_workload.key, point.img_s, ceiling_img_s)
            results.side_by_side.append(row)
            print(
                f"    round {number} {load_workload.key} c={c}: {point.img_s:,.0f} img/s, "
                f"ceiling {ceiling_img_s:,.0f}: {row.ratio:.2f}x",
                flush=True,
            )


@contextlib.contextmanager
def _companion(
    kind: servers.ServerKind, running: servers.Running, workload: Workload, results: Results
) -> Iterator[None]:
    """The explanation client beside the load, for the kind that measures its cost."""
    if kind.key != OURS_EXPLAINED:
        yield
        return
    model = workload.card.stem
    with ExplainClient(running.predict_url, model, workload.body, workload.content_type) as client:
        yield
    results.notes.append(f"{kind.key}, {workload.key}: {client.summary()}")
    print(f"  {client.summary()}", flush=True)


def _note_processes(results: Results, what: str, pid: int) -> float | None:
    """Each process's idle RSS, noted; the largest HTTP worker's (a target of its own)."""
    rows = procs.tree_rss_by_process(pid)
    text = ", ".join(f"{role} {mb:.0f} MB" for role, mb in rows)
    results.notes.append(f"{what}: idle RSS by process: {text}")
    print(f"  processes: {text}", flush=True)
    return max((mb for role, mb in rows if role == "service.http_worker"), default=None)


def _print_point(p: Point) -> None:
    p50, p99 = p.hey.latency_ms(50), p.hey.latency_ms(99)
    batch = f", mean batch {p.mean_batch:.2f}" if p.mean_batch else ""
    print(
        f"    {p.workload} c={p.concurrency}: {p.req_s:,.1f} req/s, {p.img_s:,.1f} img/s, "
        f"p50 {p50 or 0:.2f} ms, p99 {p99 or 0:.2f} ms, errors {p.hey.failed}{batch}",
        flush=True,
    )


def run_ceilings(workloads: dict[str, Workload], plan: Plan, results: Results) -> None:
    """Measured before the servers and again after them; each figure keeps its better pass."""
    first = results.ceilings
    results.ceilings = []
    _measure_ceilings(workloads, plan, results)
    if first:
        best = {(c.workload, c.variant): c for c in first}
        results.ceilings = [
            best[(c.workload, c.variant)].best_of(c) if (c.workload, c.variant) in best else c
            for c in results.ceilings
        ]


def _measure_ceilings(workloads: dict[str, Workload], plan: Plan, results: Results) -> None:
    seconds = 1.5 if plan.quick else 4.5
    w1, w2 = workloads["W1"], workloads["W2"]
    print("ceilings: W1", flush=True)
    results.ceilings += ceiling.measure_workload(
        "W1", str(w1.card), w1.samples, threads=plan.threads,
        batch_sizes=(1, 8, 16, 32, 64, 128), seconds=seconds,
    )  # fmt: skip
    fast = ceiling.cpu_has_bf16() and not plan.quick
    variants = (ceiling.FP32, *ceiling.FAST_VARIANTS) if fast else (ceiling.FP32,)
    print("ceilings: W2", flush=True)
    results.ceilings += ceiling.measure_workload(
        "W2", str(w2.card), w2.samples, threads=plan.threads,
        batch_sizes=(1, 8, 16, 32), seconds=seconds * 2, variants=variants,
    )  # fmt: skip


def run_servers(
    hey: str,
    workloads: dict[str, Workload],
    plan: Plan,
    results: Results,
    out: Path,
    only: set[str],
) -> None:
    w1, w2 = workloads["W1"], workloads["W2"]
    many = [(workloads[k], plan.w1x64_concurrency) for k in ("W1x64", "W1x64v2")]
    many += [(workloads["W1v2"], c) for c in plan.w1v2_concurrency]
    for kind in SERVER_KINDS:
        if kind.key not in only:
            continue
        print(f"W1: {kind.label}", flush=True)
        extra = many if kind.ours else []
        bench_server(hey, kind, w1, extra, plan.w1_for(kind), plan, results, out)
        # Right after the default server: the pairs compared by the targets, minutes apart.
        for variant, c in W1_DEBUGGING_KINDS if kind.key == "cnn-serve" else ():
            print(f"W1: {variant.label}", flush=True)
            bench_server(hey, variant, w1, [], (c,), plan, results, out)
    for kind in (*SERVER_KINDS, *(() if plan.quick else W2_EXTRA_KINDS)):
        if not kind.w2 or (kind.key not in only and not (kind.ours and "cnn-serve" in only)):
            continue
        print(f"W2: {kind.label}", flush=True)
        bench_server(hey, kind, w2, [], plan.w2_concurrency, plan, results, out)


def write(results: Results, out: Path, destination: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=1))
    text = render(results, gpu=load_gpu_results(), notes=reading(results))
    destination.write_text(text)
    print(f"wrote {destination} and {out / 'results.json'}", flush=True)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through bench_server's finally: no server left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s + 3 s per point")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for everyone")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--servers", default=",".join(k.key for k in SERVER_KINDS))
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=(),
        help="W1 concurrencies for every server, e.g. 1,64 (default: the plan's)",
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per point")
    parser.add_argument("--no-ceilings", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite RESULTS.md from OUT/results.json"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        saved = Results.from_dict(json.loads((args.out / "results.json").read_text()))
        write(saved, args.out, args.results)
        return 0
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    plan = Plan.make(args.quick, args.threads, concurrency=args.concurrency, seconds=args.seconds)
    out = args.out.resolve()
    results = Results(started=time.strftime("%Y-%m-%d %H:%M:%S %Z"), quick=args.quick)
    results.settings = plan.as_settings()
    hey = ensure_hey()
    ensure_peer_env()
    results.machine = machine_info()
    results.versions = versions(hey)
    workloads = prepare(out / "assets")
    if not args.no_ceilings:
        run_ceilings(workloads, plan, results)
    run_servers(hey, workloads, plan, results, out, set(args.servers.split(",")))
    print("hand-off cost between processes (bench/handoff.py)", flush=True)
    for line in handoff.summary():
        results.notes.append(line)
        print(f"  {line}", flush=True)
    print("a model version rolled out under load (bench/rollout.py)", flush=True)
    _, lines = rollout.summary(duration_s=8.0 if plan.quick else 20.0)
    for line in lines:
        results.notes.append(line)
        print(f"  {line}", flush=True)
    if not args.no_profile:
        print("profile: cnn-serve under W1 c=64 (py-spy)", flush=True)
        results.profile = profile_ours(hey, workloads["W1"], plan.threads, out, quick=plan.quick)
    if not args.no_ceilings and not plan.quick:
        print("ceilings, second pass", flush=True)
        run_ceilings(workloads, plan, results)
    results.machine["load average at the end (1, 5, 15 min)"] = " ".join(
        f"{x:.2f}" for x in os.getloadavg()
    )
    results.finished = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    write(results, out, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
