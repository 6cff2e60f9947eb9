"""Device and precision policy: the logic that picks CUDA or CPU, testable without a GPU."""

from __future__ import annotations

import pytest
import torch

import models
from service.devices import (
    BF16_MIN_MULTIPLY_ADDS,
    DeviceUnavailable,
    plan_for,
    resolve_device,
    resolve_precision,
)
from service.engine import Engine


def test_auto_picks_cuda_when_present_and_cpu_otherwise() -> None:
    assert resolve_device("auto", cuda_available=True, cuda_count=2) == torch.device("cuda:0")
    assert resolve_device("auto", cuda_available=False, cuda_count=0) == torch.device("cpu")
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == torch.device("cuda", 1)
    assert resolve_device("cpu", cuda_available=True, cuda_count=1) == torch.device("cpu")


@pytest.mark.parametrize(("requested", "count"), [("cuda", 0), ("cuda:3", 2)])
def test_missing_cuda_is_refused_by_name(requested: str, count: int) -> None:
    with pytest.raises(DeviceUnavailable, match=requested):
        resolve_device(requested, cuda_available=count > 0, cuda_count=count)


def test_precision_policy() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp16"
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    big, small = BF16_MIN_MULTIPLY_ADDS, 5_500_000
    assert resolve_precision("auto", cpu, cpu_bf16=True, multiply_adds=big) == "bf16"
    assert resolve_precision("auto", cpu, cpu_bf16=True, multiply_adds=small) == "fp32"
    assert resolve_precision("auto", cpu, cpu_bf16=False, multiply_adds=big) == "fp32"
    assert resolve_precision("fp32", cpu, cpu_bf16=True, multiply_adds=big) == "fp32"
    # A card may ask for bf16 on a GPU (a model whose activations overflow fp16); the
    # server's explicit precision still wins, and a CPU goes by its own rule.
    cuda = torch.device("cuda:0")
    assert resolve_precision("auto", cuda, card_gpu_precision="bf16") == "bf16"
    assert resolve_precision("fp16", cuda, card_gpu_precision="bf16") == "fp16"
    assert resolve_precision("auto", cpu, card_gpu_precision="bf16") == "fp32"


def test_bf16_plans_run_channels_last_on_the_cpu() -> None:
    plan = plan_for("cpu", "bf16")
    assert plan.channels_last
    assert not plan.pin_memory


def test_cpu_plan_skips_gpu_only_tricks() -> None:
    plan = plan_for("cpu", "auto")
    assert plan.device.type == "cpu"
    assert (plan.precision, plan.channels_last, plan.pin_memory) == ("fp32", False, False)
    assert plan.autocast_dtype is None
    assert plan_for("cpu", "bf16").autocast_dtype == torch.bfloat16


def test_engine_uint8_and_float_inputs_agree_with_the_module() -> None:
    loaded = models.load(models.default_model_path())
    engine = Engine(loaded, plan_for("cpu", "fp32"))
    pixels = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    normalized = loaded.preprocess.normalize(pixels)
    with torch.inference_mode():
        expected = loaded.module(normalized)
    from_uint8 = engine.run([pixels[:1], pixels[1:]])
    mixed = engine.run([pixels[:1], normalized[1:]])
    torch.testing.assert_close(torch.from_numpy(from_uint8.logits), expected)
    torch.testing.assert_close(torch.from_numpy(mixed.logits), expected)
    torch.testing.assert_close(
        torch.from_numpy(from_uint8.probabilities), torch.softmax(expected, dim=1)
    )


def test_bf16_autocast_on_cpu_stays_close_to_fp32() -> None:
    loaded = models.load(models.default_model_path())
    pixels = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    fp32 = Engine(loaded, plan_for("cpu", "fp32")).run([pixels])
    bf16 = Engine(loaded, plan_for("cpu", "bf16")).run([pixels])
    assert (fp32.probabilities.argmax(1) == bf16.probabilities.argmax(1)).mean() >= 0.75
    assert abs(fp32.probabilities - bf16.probabilities).max() < 0.1


def test_fp32_engine_runs_a_frozen_graph_equal_to_the_module() -> None:
    loaded = models.load(models.default_model_path())
    engine = Engine(loaded, plan_for("cpu", "fp32"))
    assert engine._graph is not None  # the GIL-free path is taken for the default model
    pixels = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    with torch.inference_mode():
        expected = loaded.module(loaded.preprocess.normalize(pixels))
    torch.testing.assert_close(torch.from_numpy(engine.run([pixels]).logits), expected)
    assert Engine(loaded, plan_for("cpu", "bf16"))._graph is None  # autocast runs eager


def test_bf16_top1_agrees_with_fp32_on_all_5000_digits() -> None:
    from models.data import mnist_arrays

    loaded = models.load(models.default_model_path())
    images, _ = mnist_arrays()
    pixels = torch.from_numpy(images[:, None])
    answers = {}
    for precision in ("fp32", "bf16"):
        engine = Engine(loaded, plan_for("cpu", precision))
        answers[precision] = torch.cat(
            [
                torch.from_numpy(engine.run([pixels[i : i + 500]]).logits).argmax(1)
                for i in range(0, 5000, 500)
            ]
        )
    agreement = (answers["fp32"] == answers["bf16"]).float().mean().item()
    assert agreement >= 0.995
