"""cnn-serve from two or more source trees, side by side in one run: did a change cost anything?

    python -m bench.compare_trees before=/tmp/old after=. [--rounds 2] [--seconds 8]

Each tree's `service` and `models` packages are imported ahead of the installed ones
(PYTHONPATH), with this checkout's interpreter and packages; W1 is each tree's own
shipped model, W2 the same random-weight resnet18. The points are W1 c=1,
W1 c=64 and W2 c=32 (bench/workloads.py); every round measures each tree at each point,
the trees' order alternating between rounds so that neither always goes first. It prints
req/s, p50 and p99 per run, then each tree's mean req/s over the first tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from bench import procs
from bench.hey import Load, ensure_hey, run_hey
from bench.workloads import Workload, prepare

POINTS = (("W1", 1), ("W1", 64), ("W2", 32))


def card_for(tree: Path, workload: Workload, out: Path) -> Path | None:
    """W1: the tree's own shipped model. Else the workload's card, with the fields a tree
    older than the card format (2) would refuse left out: they do not touch the weights."""
    if workload.key == "W1":
        return None
    if "card_format" in (tree / "models" / "card.py").read_text():
        return workload.card
    card = json.loads(workload.card.read_text())
    for newer in ("card_format", "activation_profile"):
        card.pop(newer, None)
    legacy = out / "legacy" / workload.card.name
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_text(json.dumps(card))
    weights = legacy.with_name(card["weights_file"])
    if not weights.exists():
        weights.symlink_to(workload.card.with_name(card["weights_file"]))
    return legacy


def start(tree: Path, card: Path | None, port: int, threads: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CNN_TORCH_THREADS": str(threads),
        "CNN_LOG_LEVEL": "warning",
    }
    command = [
        sys.executable, "-c", "import sys; from service.cli import main; sys.exit(main())",
        "--host", "127.0.0.1", "--port", str(port),
        *(("--model", f"m={card}") if card else ()),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd="/", stdout=subprocess.DEVNULL)
    ready = f"http://127.0.0.1:{port}/readyz"
    for _ in range(1200):
        try:
            with urllib.request.urlopen(ready, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{tree}: the server exited {process.returncode}") from None
            time.sleep(0.1)
    raise RuntimeError(f"{tree}: not ready in 120 s")


def measure(
    hey: str, tree: Path, workload: Workload, c: int, seconds: float, out: Path
) -> tuple[float, ...]:
    port = procs.free_port()
    process = start(tree, card_for(tree, workload, out), port, threads=2)
    try:
        url = f"http://127.0.0.1:{port}/v1/classify"
        load = Load(url, workload.body, workload.content_type, c, 2.0)
        run_hey(hey, load)  # warm-up at the same load, discarded
        result = run_hey(hey, replace(load, seconds=seconds))
    finally:
        process.terminate()
        process.wait(30)
    return (
        result.ok / result.seconds,
        result.latency_ms(50) or 0.0,
        result.latency_ms(99) or 0.0,
        float(result.failed),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=PATH")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args(argv)
    trees = [(name, Path(path).resolve()) for name, path in (t.split("=", 1) for t in args.trees)]
    workloads, hey = prepare(args.out / "assets"), ensure_hey()
    rates: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for key, c in POINTS:
            order = trees if round_ % 2 == 0 else trees[::-1]
            for name, tree in order:
                rps, p50, p99, failed = measure(
                    hey, tree, workloads[key], c, args.seconds, args.out
                )
                rates.setdefault((f"{key} c={c}", name), []).append(rps)
                print(f"{key} c={c} {name}: {rps:,.1f} req/s, p50 {p50:.2f} ms, "
                      f"p99 {p99:.2f} ms, failed {failed:.0f}", flush=True)  # fmt: skip
    first = trees[0][0]
    for key, c in POINTS:
        point = f"{key} c={c}"
        base = statistics.mean(rates[(point, first)])
        ratios = ", ".join(
            f"{name} {statistics.mean(rates[(point, name)]) / base:.2f}x" for name, _ in trees
        )
        print(f"{point}: mean req/s over {first}: {ratios}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
