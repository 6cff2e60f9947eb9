"""What capturing feature maps costs: a forward pass with capture vs a plain one.

    .venv/bin/python -m bench.capture_overhead [--threads 2] [--rounds 200]

Runs the service's own Engine on the shipped model (the path a batch takes in
the server: uint8 pixels in, normalization, forward, float32 NumPy out) and
prints, per batch size, the median time of a plain forward pass, of one that
captures every feature-map layer, and of one that captures a single layer,
and their ratios. Plain and capturing passes alternate so that both see the
same machine state. It prints; it never asserts.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

import models
from models.layers import feature_layers
from service.allocator import keep_freed_memory
from service.devices import plan_for
from service.engine import Engine


def _summary_ms(samples: list[float]) -> tuple[float, float]:
    """(median, fastest decile): on a shared machine the decile is the model's own cost."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000.0, ordered[len(ordered) // 10] * 1000.0


def _time(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(
    engine: Engine, batch: int, rounds: int, every: frozenset[str]
) -> dict[str, tuple[float, float]]:
    shape = engine.loaded.card.input.shape
    pixels = [torch.randint(0, 256, (batch, *shape), dtype=torch.uint8)]
    one = frozenset({sorted(every)[0]})
    runs = {
        "plain": lambda: engine.run(pixels),
        "all layers": lambda: engine.run(pixels, every),
        "one layer": lambda: engine.run(pixels, one),
    }
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(max(5, rounds // 10)):  # warm-up
        for run in runs.values():
            run()
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(_time(run))
    return {name: _summary_ms(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=200, help="timed passes per variant")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    keep_freed_memory()  # as cnn-serve does at start-up
    torch.set_num_threads(args.threads)
    loaded = models.load(models.default_model_path())
    layers = feature_layers(loaded.module, loaded.card.input.shape)
    engine = Engine(loaded, plan_for("cpu", "fp32"), layers)
    every = frozenset(layer.name for layer in layers)
    print(f"model {loaded.card.name}: {len(layers)} feature-map layers; torch {torch.__version__}")
    print(f"{platform.processor() or platform.machine()}, {args.threads} torch threads")
    print("times in ms, median / fastest decile; ratios to the plain pass, the same two ways")
    print(
        f"{'batch':>5} {'plain':>15} {'all layers':>15} {'ratio':>11} {'one layer':>15} {'ratio':>11}"
    )
    for batch in args.batches:
        rounds = max(20, args.rounds // batch)
        ms = measure(engine, batch, rounds, every)
        plain, full, one = ms["plain"], ms["all layers"], ms["one layer"]
        print(
            f"{batch:>5} {_pair(plain)} {_pair(full)} {_ratio(full, plain)} "
            f"{_pair(one)} {_ratio(one, plain)}"
        )


def _pair(ms: tuple[float, float]) -> str:
    return f"{ms[0]:>7.3f}/{ms[1]:<7.3f}"


def _ratio(ms: tuple[float, float], base: tuple[float, float]) -> str:
    return f"{ms[0] / base[0]:>5.2f}/{ms[1] / base[1]:<5.2f}"


if __name__ == "__main__":
    main()
