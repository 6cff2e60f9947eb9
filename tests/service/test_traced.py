"""The traced graphs of the batch path: the same answers, and no torch op called from Python
around the graph for a batch of plain pixels (each would let go of the GIL mid-batch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import models
from models.activation_stats import SUMMARY_IMAGES, MapSummary
from service.devices import plan_for
from service.engine import Engine
from service.traced import PIXEL_GRAPH_MAX_WEIGHT_BYTES, frozen_graph, pixel_graph, weight_bytes

# Attribute reads (dtype, device) and the NumPy view of a result: no kernel runs.
NOT_OPS = {"TensorBase.numpy", "getset_descriptor.__get__"}


class TorchCalls(TorchFunctionMode):
    """The torch functions and tensor methods called from Python while active."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        self.names.add(getattr(func, "__qualname__", repr(func)))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(models.load(models.default_model_path()), plan_for("cpu", "fp32"))


def _split(pixels: torch.Tensor, parts: int) -> list[torch.Tensor]:
    return list(pixels.tensor_split(parts))


@pytest.mark.parametrize(("size", "parts"), [(1, 1), (7, 3), (32, 2), (64, 5)])
def test_plain_pixels_through_the_pixel_graph_answer_exactly_as_the_float_path(
    engine: Engine, size: int, parts: int
) -> None:
    pixels = torch.randint(0, 256, (size, 1, 28, 28), dtype=torch.uint8)
    fast = engine.run(_split(pixels, parts))
    graph, engine._pixel_graph = engine._pixel_graph, None
    try:
        slow = engine.run(_split(pixels, parts))  # normalize, frozen graph, softmax
    finally:
        engine._pixel_graph = graph
    assert np.array_equal(fast.logits, slow.logits)
    assert np.array_equal(fast.probabilities, slow.probabilities)
    with torch.inference_mode():
        eager = engine.module(engine.loaded.preprocess.normalize(pixels))
    torch.testing.assert_close(torch.from_numpy(fast.logits), eager)


def test_a_batch_of_plain_pixels_calls_no_torch_op_outside_the_graph(engine: Engine) -> None:
    assert engine._pixel_graph is not None
    parts = _split(torch.randint(0, 256, (9, 1, 28, 28), dtype=torch.uint8), 3)
    with TorchCalls() as fast:
        engine.run(parts)
    assert fast.names - NOT_OPS == set()
    graph, engine._pixel_graph = engine._pixel_graph, None
    try:
        with TorchCalls() as slow:
            engine.run(parts)
    finally:
        engine._pixel_graph = graph
    # The path it replaces joins, normalizes and takes the softmax from Python.
    assert {"_VariableFunctionsClass.cat", "_VariableFunctionsClass.softmax"} <= slow.names


MONITORED = ("relu1", "relu3")


@pytest.fixture(scope="module")
def monitoring() -> Engine:
    return Engine(
        models.load(models.default_model_path()), plan_for("cpu", "fp32"), monitored=MONITORED
    )


@pytest.mark.parametrize("size", [20, 3])
def test_a_sampled_batch_is_answered_by_the_pixel_graph_and_summarized_by_one_more(
    engine: Engine, monitoring: Engine, size: int
) -> None:
    pixels = torch.randint(0, 256, (size, 1, 28, 28), dtype=torch.uint8)
    parts, names = _split(pixels, 2), frozenset(MONITORED)
    with TorchCalls() as calls:
        sampled = monitoring.run(parts, summarize=names)
    assert calls.names - NOT_OPS == set()
    plain = engine.run(parts)
    assert np.array_equal(sampled.probabilities, plain.probabilities)
    assert np.array_equal(sampled.logits, plain.logits)
    # The eager module's maps of the same first images: the graph folds BatchNorm into the
    # convolutions, so its maps agree to rounding.
    eager = engine.run([pixels[:SUMMARY_IMAGES]], capture=names)
    for name in names:
        got, expected = sampled.summaries[name], MapSummary.of(eager.features[name])
        assert eager.features[name].shape[0] == min(size, SUMMARY_IMAGES)
        assert got.count == expected.count
        assert got.mean == pytest.approx(expected.mean, rel=1e-5)
        assert got.m2 == pytest.approx(expected.m2, rel=1e-4)
        assert got.zeros > 0 and abs(got.zeros - expected.zeros) <= expected.count // 1000
        np.testing.assert_allclose(got.channel_means, expected.channel_means, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.channel_max, expected.channel_max, rtol=1e-4, atol=1e-5)


def test_layers_beyond_the_monitored_ones_are_summarized_eagerly(monitoring: Engine) -> None:
    pixels = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    with TorchCalls() as calls:
        sampled = monitoring.run([pixels], summarize=frozenset({"relu2"}))
    assert "_VariableFunctionsClass.softmax" in calls.names  # the float path
    maps = monitoring.run([pixels], capture=frozenset({"relu2"})).features["relu2"]
    assert sampled.summaries["relu2"].zeros == MapSummary.of(maps).zeros


def test_float_inputs_and_captures_keep_the_float_path(engine: Engine) -> None:
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    normalized = engine.loaded.preprocess.normalize(pixels)
    from_floats = engine.run([normalized])
    from_pixels = engine.run([pixels])
    np.testing.assert_allclose(from_floats.logits, from_pixels.logits, rtol=1e-5, atol=1e-5)
    layer = next(iter(engine._layers))
    captured = engine.run([pixels], capture=frozenset({layer}))
    assert captured.features[layer].shape[0] == 4
    np.testing.assert_allclose(captured.logits, from_pixels.logits, rtol=1e-4, atol=1e-4)


def test_no_pixel_graph_under_autocast_or_off_the_cpu() -> None:
    loaded = models.load(models.default_model_path())
    assert Engine(loaded, plan_for("cpu", "bf16"))._pixel_graph is None
    meta = torch.empty((2, 1, 28, 28), device="meta")
    scale = loaded.preprocess.normalize_scale
    assert pixel_graph(loaded.module, scale, scale, meta) is None


def test_a_model_with_large_weights_gets_no_second_graph() -> None:
    small = models.load(models.default_model_path())
    assert weight_bytes(small.module) <= PIXEL_GRAPH_MAX_WEIGHT_BYTES
    large = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 4096), nn.Linear(4096, 10))
    assert weight_bytes(large) > PIXEL_GRAPH_MAX_WEIGHT_BYTES
    loaded = dataclasses.replace(small, module=large.eval())
    engine = Engine(loaded, plan_for("cpu", "fp32"), layers=[])
    assert engine._graph is not None and engine._pixel_graph is None
    pixels = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    with torch.inference_mode():
        expected = large(loaded.preprocess.normalize(pixels))
    torch.testing.assert_close(torch.from_numpy(engine.run([pixels]).logits), expected)


class _Branching(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x  # a Python branch on a value: traces wrongly


def test_a_forward_that_branches_on_values_is_not_traced() -> None:
    example = torch.ones((2, 3))
    assert frozen_graph(_Branching(), example) is None
    assert pixel_graph(_Branching(), torch.ones(1), torch.zeros(1), example) is None
