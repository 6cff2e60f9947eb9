"""The engine: one model instance on one device, running batches.

It knows torch and nothing about HTTP. A batch arrives as CPU tensors (uint8
pixels or already-normalized float32), is moved to the device, normalized,
run under inference_mode (and autocast when a reduced precision is chosen),
and comes back as float32 NumPy arrays. Feature maps of named layers are
captured by forward hooks on the eager module, for that batch only.

Capture rule: a layer name (models.layers) is one call of one module. A module
called k times per forward pass (a ResNet block's shared `relu`) is hooked once
and its calls are counted; only the calls asked for are kept, each cloned at
once, because a later in-place op (ReLU(inplace=True), a residual `+=`) would
rewrite the tensor. Capture always runs the eager module: a compiled copy, if
one is ever added, must not be used for batches that capture.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from models import LoadedModel
from models.layers import FeatureLayer, feature_layers
from service.devices import DevicePlan


@dataclass(frozen=True)
class EngineOutput:
    probabilities: NDArray[np.float32]  # [N, classes]
    logits: NDArray[np.float32]  # [N, classes]
    features: dict[str, NDArray[np.float32]] = field(default_factory=dict)  # name -> [N,C,H,W]
    seconds: float = 0.0  # forward pass, device-synchronized


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        plan: DevicePlan,
        layers: Sequence[FeatureLayer] | None = None,
    ) -> None:
        self.loaded = loaded
        if layers is None:
            layers = feature_layers(loaded.module, loaded.card.input.shape)
        self._layers = {layer.name: layer for layer in layers}
        self.plan = plan
        module = copy.deepcopy(loaded.module).to(plan.device)
        if plan.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module: nn.Module = module.eval()
        self._modules = dict(self.module.named_modules())
        device = plan.device
        self._scale = loaded.preprocess.normalize_scale.to(device)
        self._offset = loaded.preprocess.normalize_offset.to(device)

    @property
    def device_name(self) -> str:
        return str(self.plan.device)

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        shape = self.loaded.card.input.shape
        for size in batch_sizes:
            self.run([torch.zeros((size, *shape), dtype=torch.uint8)])

    def run(
        self, inputs: Sequence[torch.Tensor], capture: frozenset[str] = frozenset()
    ) -> EngineOutput:
        started = time.perf_counter()
        batch = self._collate(inputs)
        captured: dict[str, torch.Tensor] = {}
        with torch.inference_mode(), self._autocast(), self._hooks(capture, captured):
            logits = self.module(batch).float()
        probabilities = torch.softmax(logits, dim=1).cpu().numpy()  # .cpu() synchronizes
        return EngineOutput(
            probabilities=probabilities,
            logits=logits.cpu().numpy(),
            features={name: t.float().cpu().numpy() for name, t in captured.items()},
            seconds=time.perf_counter() - started,
        )

    def _collate(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        device = self.plan.device
        if all(t.dtype == torch.uint8 for t in inputs):
            # Ship uint8 pixels (a quarter of the bytes) and normalize on the device.
            batch = self._to_device(torch.cat(list(inputs)) if len(inputs) > 1 else inputs[0])
            batch = batch.to(torch.float32).mul_(self._scale).add_(self._offset)
        else:
            batch = self._to_device(torch.cat([self._as_float(t) for t in inputs]))
        if self.plan.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch.to(device)

    def _as_float(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype == torch.uint8:
            return self.loaded.preprocess.normalize(tensor)
        return tensor.to(torch.float32)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.plan.pin_memory:
            return tensor.pin_memory().to(self.plan.device, non_blocking=True)
        return tensor

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = self.plan.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.plan.device.type, dtype=dtype)

    @contextlib.contextmanager
    def _hooks(self, names: frozenset[str], captured: dict[str, torch.Tensor]) -> Iterator[None]:
        wanted: dict[str, dict[int, str]] = {}  # module name -> {call index: layer name}
        for name in names:
            layer = self._layers.get(name)
            module, call = (layer.module, layer.call) if layer else (name, 0)
            wanted.setdefault(module, {})[call] = name
        handles = [
            self._modules[module].register_forward_hook(_keeper(calls, captured))
            for module, calls in wanted.items()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _keeper(
    calls: dict[int, str], captured: dict[str, torch.Tensor]
) -> Callable[[nn.Module, object, torch.Tensor], None]:
    """A forward hook that keeps a clone of the outputs of the listed calls of its module."""
    count = 0

    def keep(_m: nn.Module, _i: object, output: torch.Tensor) -> None:
        nonlocal count
        name = calls.get(count)
        count += 1
        if name is not None:
            captured[name] = output.detach().clone()

    return keep
