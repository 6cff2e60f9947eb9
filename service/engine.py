"""The engine: one model instance on one device, running batches.

It knows torch and nothing about HTTP. A batch arrives as CPU tensors (uint8
pixels or already-normalized float32), is moved to the device, normalized,
run under inference_mode (and autocast when a reduced precision is chosen),
and comes back as float32 NumPy arrays. Feature maps of named layers are
captured by forward hooks on the eager module, for that batch only.

Capture rule: a layer name (models.layers) is one call of one module. A module
called k times per forward pass (a ResNet block's shared `relu`) is hooked once
and its calls are counted; only the calls asked for are kept. An output that a
later in-place op rewrites (ReLU(inplace=True), a residual `+=`; found at load
time) is cloned when kept; any other is kept as is, which costs nothing.
Capture (models.layers.capturing) always runs the eager module; batches that capture nothing run a
traced, frozen copy when one exists (service.traced: on the CPU, a batch of plain pixels
runs normalization, model and softmax in one graph), and so do batches sampled for
activation monitoring, whose summaries of their first SUMMARY_IMAGES images come from a
second graph where the pixel graph is (`monitored` layers), else from an eager pass over
those images alone.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from models import LoadedModel
from models.activation_stats import SUMMARY_IMAGES, MapSummary, summarize_tensor
from models.feature_layer import FeatureLayer
from models.layers import capturing, feature_layers
from service.device_decode import TensorPixels
from service.devices import DevicePlan
from service.graphs import BucketedForward, cuda_graphs
from service.jpeg import EncodedJpegs
from service.staging import HostStaging
from service.traced import frozen_graph, normalized, pixel_graph, summary_graph

log = logging.getLogger("service.engine")

# A request's images in a batch: pixels (uint8, or normalized float32), or JPEGs that the
# engine decodes on its device.
BatchInput = torch.Tensor | EncodedJpegs


@dataclass(frozen=True)
class EngineOutput:
    probabilities: NDArray[np.float32]  # [N, classes]
    logits: NDArray[np.float32]  # [N, classes]
    features: dict[str, NDArray[np.float32]] = field(default_factory=dict)  # name -> [N,C,H,W]
    summaries: dict[str, MapSummary] = field(default_factory=dict)  # name -> reduced on device
    seconds: float = 0.0  # forward pass, device-synchronized


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        plan: DevicePlan,
        layers: Sequence[FeatureLayer] | None = None,
        monitored: Sequence[str] = (),
    ) -> None:
        """`monitored`: the layers that activation monitoring summarizes (a batch's
        `summarize`), for which a graph is built where the pixel graph is."""
        self.loaded = loaded
        if layers is None:
            layers = feature_layers(loaded.module, loaded.card.input.shape)
        self._layers = {layer.name: layer for layer in layers}
        self.plan = plan
        module = copy.deepcopy(loaded.module).to(plan.device)
        if plan.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module: nn.Module = module.eval()
        self._children = _plain_sequential_children(self.module)
        device = plan.device
        self._scale = loaded.preprocess.normalize_scale.to(device)
        self._offset = loaded.preprocess.normalize_offset.to(device)
        # Under autocast the eager module runs: a traced graph would bake in one precision.
        self._graph = None if plan.autocast_dtype else frozen_graph(module, self._example_batch())
        self._pixel_graph = (
            None
            if plan.autocast_dtype
            else pixel_graph(module, self._scale, self._offset, self._example_batch())
        )
        self._monitored = frozenset(monitored)
        self._summary_graph = (
            summary_graph(
                module,
                self._scale,
                self._offset,
                [self._layers[name] for name in monitored],
                self._example_batch(),
            )
            if self._pixel_graph is not None
            else None
        )
        self._replayed: BucketedForward | None = None  # CUDA graphs, captured at warm-up
        self._jpegs = TensorPixels(loaded.card.input)
        # Each instance on a CUDA device runs on a stream of its own: one instance's
        # transfers and forward pass overlap another's instead of queueing behind them on
        # the default stream. Within an instance a batch is synchronous (its answers are
        # read back at the end of `run`), so one stream carries both its copy and its compute.
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]
        self._staging = (
            HostStaging(device, pin=True, event=torch.cuda.Event())  # type: ignore[no-untyped-call]
            if plan.pin_memory
            else None
        )

    @property
    def device_name(self) -> str:
        return str(self.plan.device)

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        shape = self.loaded.card.input.shape
        for size in batch_sizes:
            self.run([torch.zeros((size, *shape), dtype=torch.uint8)])
        if self.plan.cuda_graphs:
            self._replayed = cuda_graphs(self._scores, self._example_batch()[:1], batch_sizes)
            if self._replayed is None:
                log.warning("CUDA graph capture failed; the forward pass runs eagerly")

    def _scores(self, batch: torch.Tensor) -> torch.Tensor:
        """The forward pass as captured: autocast without its cast cache (CUDA graphs
        replay the casts themselves), float32 logits out."""
        dtype = self.plan.autocast_dtype
        autocast = (
            torch.autocast(self.plan.device.type, dtype=dtype, cache_enabled=False)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            return _as_float32((self._graph or self.module)(batch))

    def run(
        self,
        inputs: Sequence[BatchInput],
        capture: frozenset[str] = frozenset(),
        summarize: frozenset[str] = frozenset(),
    ) -> EngineOutput:
        """The batch's scores, the maps of `capture` and the summaries of `summarize` (over
        the batch's first SUMMARY_IMAGES images)."""
        started = time.perf_counter()
        with self._on_stream():
            return self._run(inputs, capture, summarize, started)

    def _on_stream(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext() if self._stream is None else torch.cuda.stream(self._stream)

    def _run(
        self,
        inputs: Sequence[BatchInput],
        capture: frozenset[str],
        summarize: frozenset[str],
        started: float,
    ) -> EngineOutput:
        summaries_of = self._summary_graph if summarize <= self._monitored else None
        graph = None if capture or (summarize and summaries_of is None) else self._pixel_graph
        pixels = None if graph is None else _host_pixels(inputs)
        if graph is not None and pixels is not None:
            with torch.inference_mode():
                graph_probabilities, graph_logits = graph(pixels)
                summaries = summaries_of(pixels) if summarize and summaries_of else {}
            return EngineOutput(
                probabilities=graph_probabilities.numpy(),
                logits=graph_logits.numpy(),
                summaries={name: summaries[name] for name in summarize},
                seconds=time.perf_counter() - started,
            )
        batch = self._collate(inputs)
        with torch.inference_mode(), self._autocast():
            if capture:
                logits, captured = self._forward_keeping(batch, capture | summarize)
            else:
                logits, captured = self._forward(batch), {}
                if summarize:
                    # A sampled batch: its answers from the fast forward pass, its summaries
                    # from an eager pass over the images they cover (the eager module ran
                    # the whole batch at 2.5x the traced graph's time: the digits model,
                    # 32 images, 4.2 ms against 1.7).
                    _, captured = self._forward_keeping(batch[:SUMMARY_IMAGES], summarize)
            summaries = {
                name: summarize_tensor(captured[name][:SUMMARY_IMAGES]) for name in summarize
            }
        probabilities = _on_host(torch.softmax(logits, dim=1)).numpy()  # .cpu() synchronizes
        return EngineOutput(
            probabilities=probabilities,
            logits=_on_host(logits).numpy(),
            features={name: _on_host(_as_float32(captured[name])).numpy() for name in capture},
            summaries=summaries,
            seconds=time.perf_counter() - started,
        )

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits by the fastest path built: CUDA graphs, the traced graph, the module."""
        if self._replayed is not None:
            return self._replayed(batch)
        logits: torch.Tensor = (self._graph or self.module)(batch)
        return _as_float32(logits)

    def _forward_keeping(
        self, batch: torch.Tensor, names: frozenset[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Float32 logits and the outputs of the named layers, from the eager module."""
        captured: dict[str, torch.Tensor] = {}
        # Names come from the model's layer list (checked where the request was read).
        layers = [self._layers[name] for name in names]
        direct = {layer.module: layer for layer in layers if layer.module in self._children}
        hooked = [layer for layer in layers if layer.module not in direct]
        with capturing(self.module, hooked, captured):
            if direct:
                return _as_float32(self._run_children(batch, direct, captured)), captured
            return _as_float32(self.module(batch)), captured

    def _example_batch(self) -> torch.Tensor:
        example = torch.randn((2, *self.loaded.card.input.shape), device=self.plan.device)
        if self.plan.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        return example

    def _collate(self, inputs: Sequence[BatchInput]) -> torch.Tensor:
        device = self.plan.device
        tensors = self._decoded(inputs)
        if all(t.dtype == torch.uint8 for t in tensors):
            # Ship uint8 pixels (a quarter of the bytes) and normalize on the device.
            batch = normalized(self._gather(tensors), self._scale, self._offset)
        else:
            batch = torch.cat([self._to_device(self._as_float(t)) for t in tensors])
        if self.plan.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch if batch.device == device else batch.to(device)

    def _gather(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """uint8 pixels as one batch on the device: from the host through the staging
        buffer on CUDA, else concatenated where they are."""
        if self._staging is not None and tensors[0].device.type == "cpu":
            return self._staging.to_device(tensors)
        return self._to_device(torch.cat(tensors) if len(tensors) > 1 else tensors[0])

    def _decoded(self, inputs: Sequence[BatchInput]) -> list[torch.Tensor]:
        """The batch's tensors, its JPEGs decoded on the device in one call (uint8 pixels).
        With none, every tensor stays on the host until collated; else all join the device."""
        jpegs = [data for item in inputs if isinstance(item, EncodedJpegs) for data in item.data]
        if not jpegs:
            return [item for item in inputs if not isinstance(item, EncodedJpegs)]
        decoded = self._jpegs.decode(jpegs, self.plan.device)
        tensors, taken = [], 0
        for item in inputs:
            if isinstance(item, EncodedJpegs):
                tensors.append(decoded[taken : taken + len(item)])
                taken += len(item)
            else:
                tensors.append(item.to(self.plan.device))
        return tensors

    def _as_float(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype == torch.uint8:
            # Where the pixels are: on the host, or on the device when decoded there.
            scale, offset = self._scale.to(tensor.device), self._offset.to(tensor.device)
            return normalized(tensor, scale, offset)
        return _as_float32(tensor)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.plan.pin_memory and tensor.device.type == "cpu":
            return tensor.pin_memory().to(self.plan.device, non_blocking=True)
        return tensor

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = self.plan.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.plan.device.type, dtype=dtype)

    def _run_children(
        self,
        batch: torch.Tensor,
        wanted: dict[str, FeatureLayer],
        captured: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """nn.Sequential's forward, keeping wanted outputs off the loop: no hook to pay for."""
        x = batch
        for name, child in self._children.items():
            x = child(x)
            layer = wanted.get(name)
            if layer is not None:
                captured[layer.name] = x.clone() if layer.rewritten else x
        return x


# The batch path calls no tensor method that hands back the tensor it was called on (an
# in-place op, or .float()/.cpu()/.to() of what already is so): a new C++ reference to a
# tensor that Python holds takes the GIL inside the op, after the op let go of it, and a
# batcher thread then waits for the event loop in the middle of a batch (service.traced).
def _host_pixels(inputs: Sequence[BatchInput]) -> torch.Tensor | None:
    """The batch's uint8 pixels as one host tensor, joined by NumPy (torch.cat would let
    go of the GIL); None unless every input is uint8 pixels on the host."""
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    if len(tensors) < len(inputs) or any(
        t.dtype != torch.uint8 or t.device.type != "cpu" for t in tensors
    ):
        return None
    if len(tensors) == 1:
        return tensors[0]
    return torch.from_numpy(np.concatenate([t.numpy() for t in tensors]))


def _as_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def _on_host(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.device.type == "cpu" else tensor.cpu()


def _plain_sequential_children(module: nn.Module) -> dict[str, nn.Module]:
    """The children of a plain nn.Sequential root whose modules are all distinct, else {}.

    Such a root runs each child exactly once, in order, so a child's output can be
    read off the loop instead of by a hook (the default model is one).
    """
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return {}
    every = list(module.named_modules(remove_duplicate=False))
    if len({id(m) for _, m in every}) != len(every):
        return {}  # a module is used twice: its calls are counted by hooks
    return dict(module.named_children())
