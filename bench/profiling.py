"""Profiling cnn-serve under W1 at c=64 with py-spy, while hey keeps it busy."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench import procs, servers
from bench.hey import Load, hey_command, parse_hey, run_hey
from bench.peers.env import peer_bin
from bench.profile import parse_collapsed, summarize
from bench.workloads import Workload

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
        cores=len(__import__("os").sched_getaffinity(0)),
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
