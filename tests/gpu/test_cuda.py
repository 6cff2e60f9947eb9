"""On a CUDA device: device selection, reduced precision, channels_last, pinned memory, OOM.

Every test here is marked `gpu` and skipped without CUDA; bench/gpu_check.sh runs them on a
GPU machine. They use the real engine and batcher with the shipped model and real digits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import models
from service.batching import Batcher
from service.device_decode import TensorPixels
from service.devices import DevicePlan, plan_for
from service.engine import Engine, EngineOutput
from service.errors import DeviceUnavailable
from service.jpeg import EncodedJpegs
from tests.helpers import Digits
from tests.service.test_device_decode import IMAGENET, PHOTOS, digit_jpegs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _pixels(loaded: models.LoadedModel, digits: Digits, count: int) -> torch.Tensor:
    arrays = [loaded.preprocess.to_uint8(digits.images[i]) for i in range(count)]
    return torch.from_numpy(np.stack(arrays))


def _plan(precision: str, *, channels_last: bool, pin: bool) -> DevicePlan:
    return DevicePlan(torch.device("cuda", 0), precision, channels_last, pin)  # type: ignore[arg-type]


def test_auto_picks_the_first_gpu_with_its_fast_path() -> None:
    plan = plan_for("auto", "auto")
    assert plan.device == torch.device("cuda", 0)
    assert (plan.precision, plan.channels_last, plan.pin_memory) == ("fp16", True, True)
    assert plan_for("cuda:0", "fp32").device == torch.device("cuda", 0)
    with pytest.raises(DeviceUnavailable, match="CUDA device"):
        plan_for(f"cuda:{torch.cuda.device_count()}", "auto")


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)]
)
def test_reduced_precision_runs_in_that_dtype_and_agrees_with_fp32(
    digits: Digits, precision: str, dtype: torch.dtype
) -> None:
    loaded = models.load(models.default_model_path())
    pixels = _pixels(loaded, digits, 1000)
    reference = Engine(loaded, _plan("fp32", channels_last=False, pin=False)).run([pixels])
    engine = Engine(loaded, _plan(precision, channels_last=True, pin=True))
    seen: list[torch.dtype] = []
    conv = next(m for m in engine.module.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        output = engine.run([pixels])
    finally:
        handle.remove()
    assert seen == [dtype]
    assert output.probabilities.dtype == np.float32
    agreement = np.mean(output.probabilities.argmax(1) == reference.probabilities.argmax(1))
    assert agreement >= 0.995
    assert np.mean(output.probabilities.argmax(1) == digits.labels[:1000]) >= 0.95


def test_channels_last_weights_and_same_answers(digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    pixels = _pixels(loaded, digits, 64)
    plain = Engine(loaded, _plan("fp32", channels_last=False, pin=False)).run([pixels])
    engine = Engine(loaded, _plan("fp32", channels_last=True, pin=False))
    conv = next(m for m in engine.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.device.type == "cuda"
    output = engine.run([pixels])
    np.testing.assert_allclose(output.probabilities, plain.probabilities, atol=2e-3)


def test_pinned_transfer_gives_the_cpu_answers(digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    pixels = _pixels(loaded, digits, 32)
    cpu = Engine(loaded, DevicePlan(torch.device("cpu"), "fp32", False, False)).run([pixels])
    engine = Engine(loaded, _plan("fp32", channels_last=False, pin=True))
    inputs_seen: list[torch.Tensor] = []
    handle = engine.module.register_forward_pre_hook(lambda _m, args: inputs_seen.append(args[0]))
    try:
        output = engine.run([pixels[:16], pixels[16:]])  # two requests, collated on the way
    finally:
        handle.remove()
    assert inputs_seen[0].device.type == "cuda"
    assert not pixels.is_pinned()  # the caller's tensor is left as it was
    np.testing.assert_allclose(output.probabilities, cpu.probabilities, atol=1e-4)


class _HungryEngine:
    """The real engine, plus a real device allocation that grows with the batch."""

    def __init__(self, engine: Engine, bytes_per_image: int) -> None:
        self.engine = engine
        self.bytes_per_image = bytes_per_image
        self.sizes: list[int] = []

    @property
    def device_name(self) -> str:
        return self.engine.device_name

    def run(
        self, inputs: Sequence[torch.Tensor], capture: frozenset[str] = frozenset()
    ) -> EngineOutput:
        images = sum(int(t.shape[0]) for t in inputs)
        try:
            scratch = torch.empty(images * self.bytes_per_image, dtype=torch.uint8, device="cuda")
            del scratch
        finally:
            torch.cuda.empty_cache()
        self.sizes.append(images)
        return self.engine.run(inputs, capture)


class _Kinds:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def batch_done(
        self, *, size: int, seconds: float, device: str, queue_waits: Sequence[float]
    ) -> None:
        pass

    def batch_failed(self, *, kind: str) -> None:
        self.failed.append(kind)


async def test_a_batch_that_runs_out_of_memory_is_split_until_it_fits(digits: Digits) -> None:
    torch.cuda.empty_cache()
    loaded = models.load(models.default_model_path())
    free, _ = torch.cuda.mem_get_info()
    # Four images need 4/3 of the free memory (out of memory); two need 2/3 (fits).
    runner = _HungryEngine(Engine(loaded, plan_for("cuda", "fp32")), int(free * 0.33))
    observer = _Kinds()
    batcher = Batcher("mnist-cnn", [runner], max_batch_size=4, max_delay_s=0.0,
                      max_queue_images=16, observer=observer)  # fmt: skip
    pixels = _pixels(loaded, digits, 4)
    deadline = time.monotonic() + 120
    tasks = [
        asyncio.ensure_future(batcher.submit(pixels[i : i + 1], deadline=deadline))
        for i in range(4)
    ]
    await asyncio.sleep(0.05)  # all four queued before the worker starts: one batch of four
    batcher.start()
    try:
        results = await asyncio.gather(*tasks)
    finally:
        batcher.stop(10)
    assert observer.failed[0] == "oom"
    assert runner.sizes == [2, 2]
    cpu = Engine(loaded, DevicePlan(torch.device("cpu"), "fp32", False, False)).run([pixels])
    predicted = [int(r.probabilities.argmax()) for r in results]
    assert predicted == [int(i) for i in cpu.probabilities.argmax(1)]
    assert all(r.batch_size == 2 for r in results)


def test_cuda_graphs_replay_every_bucket_with_the_eager_answers(digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    sizes = [1, 2, 4, 8, 16, 32]
    eager = Engine(loaded, plan_for("cuda:0", "fp16", cuda_graphs=False))
    graphed = Engine(loaded, plan_for("cuda:0", "fp16", cuda_graphs=True))
    eager.warm_up(sizes)
    graphed.warm_up(sizes)
    assert graphed._replayed is not None  # captured, not fallen back to eager
    for count in (1, 3, 7, 16, 32, 40):  # exact, padded, and past the largest bucket
        pixels = _pixels(loaded, digits, count)
        expected = eager.run([pixels]).probabilities
        got = graphed.run([pixels]).probabilities
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
        assert got.shape == (count, loaded.card.num_classes)


def test_instances_on_their_own_streams_answer_as_one_alone(digits: Digits) -> None:
    """Two instances run at once from two threads, each on its stream through its pinned
    staging buffer, many batches of several sizes: every answer is the lone answer."""
    loaded = models.load(models.default_model_path())
    plan = plan_for("cuda:0", "fp32", cuda_graphs=False)
    instances = [Engine(loaded, plan) for _ in range(2)]
    pixels = _pixels(loaded, digits, 48)
    alone = instances[0].run([pixels]).probabilities
    assert instances[0]._stream is not instances[1]._stream
    failures: list[str] = []

    def hammer(engine: Engine, offset: int) -> None:
        for round_ in range(30):
            size = 1 + (round_ * 7 + offset) % 48
            start = (round_ + offset) % (49 - size)
            got = engine.run(
                [pixels[start : start + size // 2], pixels[start + size // 2 : start + size]]
            )
            if not np.allclose(got.probabilities, alone[start : start + size], atol=1e-4):
                failures.append(f"instance {offset} round {round_}")

    threads = [
        threading.Thread(target=hammer, args=(engine, index))
        for index, engine in enumerate(instances)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    staging = instances[0]._staging
    assert staging is not None and staging._buffer.is_pinned()


def test_jpegs_decode_on_the_gpu_within_a_level_or_two_of_the_cpu() -> None:
    photos = [data for _, data in PHOTOS]
    on_gpu = TensorPixels(IMAGENET).decode(photos, torch.device("cuda", 0))
    on_cpu = TensorPixels(IMAGENET).decode(photos, torch.device("cpu"))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == on_cpu.shape
    difference = (on_gpu.cpu().to(torch.int16) - on_cpu.to(torch.int16)).abs().float()
    print(f"nvJPEG vs libjpeg-turbo, mean absolute difference: {difference.mean():.3f} levels")
    assert difference.mean() < 2.0


def test_the_engine_decodes_jpeg_requests_on_the_gpu(digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    files = digit_jpegs(6)
    cpu = Engine(loaded, plan_for("cpu", "fp32", device_decode="on"))
    gpu = Engine(loaded, plan_for("cuda:0", "fp32", cuda_graphs=False))
    assert plan_for("cuda:0", "auto").decodes_jpeg  # the default on CUDA
    expected = cpu.run([EncodedJpegs(tuple(files))]).probabilities
    got = gpu.run([EncodedJpegs(tuple(files[:2])), EncodedJpegs(tuple(files[2:]))]).probabilities
    np.testing.assert_allclose(got, expected, atol=2e-2)
    assert (got.argmax(1) == expected.argmax(1)).all()
