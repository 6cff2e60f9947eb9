"""In-process ceilings: what one process does with no HTTP at all, serially.

- model alone: the service's own forward pass (service.engine.Engine: normalization,
  the model, softmax) on ready pixels, at each batch size; the best is the ceiling;
- decode + preprocess alone: encoded bytes -> uint8 pixels, one image at a time;
- together: decode + preprocess a batch, then run it, at the model's best batch.

The process is set up as the service sets up its own (the malloc thresholds of
service.allocator), so the ceiling and the service run the same code on the same
terms and their ratio is what HTTP and batching cost. A variant runs the model in
channels_last and/or under bf16 autocast, the CPU fast path, for comparison with fp32.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import models
from models.pixels import PixelPipeline
from service.allocator import keep_freed_memory
from service.devices import DevicePlan
from service.engine import Engine
from service.pipeline import decode_pixels

MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class Variant:
    name: str
    channels_last: bool = False
    bf16: bool = False


FP32 = Variant("fp32")
FAST_VARIANTS = (
    Variant("fp32 channels_last", channels_last=True),
    Variant("bf16 autocast channels_last", channels_last=True, bf16=True),
)


@dataclass
class Ceiling:
    workload: str
    variant: str
    model_img_s: dict[int, float] = field(default_factory=dict)  # batch size -> img/s
    decode_img_s: float = 0.0
    together_img_s: float = 0.0

    @property
    def best_batch(self) -> int:
        return max(self.model_img_s, key=lambda b: self.model_img_s[b])

    @property
    def model_best_img_s(self) -> float:
        return self.model_img_s[self.best_batch]

    def best_of(self, other: Ceiling) -> Ceiling:
        """Each figure's better value of two passes: other work only ever slows a pass down."""
        sizes = set(self.model_img_s) | set(other.model_img_s)
        return Ceiling(
            self.workload,
            self.variant,
            {b: max(self.model_img_s.get(b, 0.0), other.model_img_s.get(b, 0.0)) for b in sizes},
            max(self.decode_img_s, other.decode_img_s),
            max(self.together_img_s, other.together_img_s),
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "model_img_s": {str(k): v for k, v in self.model_img_s.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Ceiling:
        raw = data["model_img_s"]
        assert isinstance(raw, dict)
        return cls(
            workload=str(data["workload"]),
            variant=str(data["variant"]),
            model_img_s={int(k): float(v) for k, v in raw.items()},
            decode_img_s=float(str(data["decode_img_s"])),
            together_img_s=float(str(data["together_img_s"])),
        )


def rate(step: Callable[[], int], *, seconds: float, windows: int = 5) -> float:
    """Items per second of `step` (which returns how many it did), after one untimed call.

    The best of a few windows: on a shared machine other work only ever slows a
    window down, and this is a ceiling.
    """
    step()
    best = 0.0
    for _ in range(windows):
        done, steps = 0, 0
        started = time.perf_counter()
        while steps < 2 or time.perf_counter() - started < seconds / windows:
            done += step()
            steps += 1
        best = max(best, done / (time.perf_counter() - started))
    return best


class Runner:
    """The engine of one variant, as the service builds it: in fp32 the optimized graph,
    under autocast the eager module."""

    def __init__(self, loaded: models.LoadedModel, variant: Variant) -> None:
        plan = DevicePlan(
            device=torch.device("cpu"),
            precision="bf16" if variant.bf16 else "fp32",
            channels_last=variant.channels_last,
            pin_memory=False,
        )
        self.engine = Engine(loaded, plan, layers=[])  # no feature maps: none are captured

    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        return self.engine.run([pixels]).probabilities


def to_pixels(pipeline: PixelPipeline, data: bytes) -> np.ndarray:
    """As the service decodes a request's image (Pillow, or libpng for a plain PNG)."""
    return decode_pixels(pipeline, data, max_pixels=MAX_PIXELS)


def measure(
    key: str,
    loaded: models.LoadedModel,
    samples: Sequence[bytes],
    *,
    variant: Variant = FP32,
    batch_sizes: Sequence[int],
    seconds: float,
    decode_img_s: float | None = None,
) -> Ceiling:
    runner = Runner(loaded, variant)
    shape = loaded.card.input.shape
    ceiling = Ceiling(key, variant.name)
    for size in batch_sizes:
        pixels = torch.randint(0, 256, (size, *shape), dtype=torch.uint8)

        def forward(batch: torch.Tensor = pixels) -> int:
            return len(runner(batch))

        ceiling.model_img_s[size] = rate(forward, seconds=seconds)
    decoder = PixelPipeline(loaded.card.input)
    if decode_img_s is None:
        one = Together(runner, decoder, samples, batch=1)
        decode_img_s = rate(lambda: int(one.decode().size > 0), seconds=seconds)
    ceiling.decode_img_s = decode_img_s
    together = Together(runner, decoder, samples, batch=ceiling.best_batch)
    ceiling.together_img_s = rate(together.step, seconds=seconds)
    return ceiling


class Together:
    """Decode a batch of the samples, then run it: the ceiling's "together" step."""

    def __init__(
        self, runner: Runner, decoder: PixelPipeline, samples: Sequence[bytes], *, batch: int
    ) -> None:
        self._runner = runner
        self._decoder = decoder
        self._samples = samples
        self._batch = batch
        self._next = itertools.count()

    def decode(self) -> np.ndarray:
        return to_pixels(self._decoder, self._samples[next(self._next) % len(self._samples)])

    def step(self) -> int:
        arrays = [self.decode() for _ in range(self._batch)]
        return len(self._runner(torch.from_numpy(np.stack(arrays))))


def together_meter(
    card: str, samples: Sequence[bytes], *, threads: int, batch: int
) -> Callable[[float], float]:
    """A function of seconds that measures the fp32 "together" img/s again, as a mean over
    those seconds (one window, as hey's figures are means): for ratios taken side by side
    with a server's, seconds apart."""
    keep_freed_memory()
    torch.set_num_threads(threads)
    loaded = models.load(card)
    together = Together(
        Runner(loaded, FP32), PixelPipeline(loaded.card.input), samples, batch=batch
    )
    return lambda seconds: rate(together.step, seconds=seconds, windows=1)


def measure_workload(
    key: str,
    card: str,
    samples: Sequence[bytes],
    *,
    threads: int,
    batch_sizes: Sequence[int],
    seconds: float,
    variants: Sequence[Variant] = (FP32,),
) -> list[Ceiling]:
    keep_freed_memory()
    torch.set_num_threads(threads)
    loaded = models.load(card)
    results: list[Ceiling] = []
    for variant in variants:
        decode = results[0].decode_img_s if results else None  # decoding is variant-free
        results.append(
            measure(
                key,
                loaded,
                samples,
                variant=variant,
                batch_sizes=batch_sizes,
                seconds=seconds,
                decode_img_s=decode,
            )
        )
    return results


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", default=str(models.default_model_path()))
    parser.add_argument("--image", required=True, help="an encoded image file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--fast", action="store_true", help="also the channels_last/bf16 variants")
    args = parser.parse_args()
    with open(args.image, "rb") as handle:
        samples = [handle.read()]
    variants = (FP32, *FAST_VARIANTS) if args.fast else (FP32,)
    for ceiling in measure_workload(
        "custom",
        args.card,
        samples,
        threads=args.threads,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        seconds=args.seconds,
        variants=variants,
    ):
        print(json.dumps(ceiling.to_dict()))


if __name__ == "__main__":
    main()
