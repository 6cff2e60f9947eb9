"""How much arithmetic one image costs a model: multiply-adds of its convolutions and linears."""

from __future__ import annotations

import torch
from torch import nn


def multiply_adds(module: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-adds for one [C,H,W] image, counted on a forward pass of zeros."""
    total = 0

    def count(layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            per_output = (
                layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            )
            total += output[0].numel() * per_output
        elif isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features

    handles = [
        m.register_forward_hook(count)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.inference_mode():
            module(torch.zeros((1, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
    return total
