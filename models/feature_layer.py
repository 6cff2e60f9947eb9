"""One feature map a user may ask for: its description, with no torch.

`models.layers.feature_layers` finds them by running the network once; an HTTP
process that never loads the model receives them from the engine that did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class FeatureLayer:
    """One feature map a user may ask for."""

    name: str  # what the user asks for
    module: str  # the module's name in named_modules()
    call: int  # which call of that module in one forward pass, from 0
    type: str  # the module's class name: Conv2d, BatchNorm2d, ReLU, BasicBlock, ...
    output_shape: tuple[int, int, int]  # [C, H, W] for the card's input size
    parameters: int  # the module's own and its children's
    kernel_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None
    has_kernels: bool = False  # a 2-D convolution: its learned filters can be shown
    # A later in-place op overwrites this output during the forward pass (ReLU(inplace=True)
    # after a BatchNorm, a residual +=): whoever keeps it must copy it at once.
    rewritten: bool = False

    def describe(self) -> dict[str, Any]:
        """The JSON form listed by the service."""
        entry: dict[str, Any] = {
            "name": self.name,
            "module": self.module,
            "call": self.call,
            "type": self.type,
            "output_shape": list(self.output_shape),
            "parameters": self.parameters,
            "has_kernels": self.has_kernels,
        }
        for key in ("kernel_size", "stride", "padding"):
            value = getattr(self, key)
            if value is not None:
                entry[key] = list(value)
        return entry

    def to_wire(self) -> dict[str, Any]:
        """Every field, for another process (`from_wire` rebuilds it)."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> FeatureLayer:
        pairs = {
            key: tuple(data[key]) if data.get(key) is not None else None
            for key in ("output_shape", "kernel_size", "stride", "padding")
        }
        return cls(**{**data, **pairs})


@dataclass(frozen=True)
class Kernels:
    """A convolution's learned filters, as float32 NumPy arrays."""

    weights: NDArray[np.float32]  # [out_channels, in_channels / groups, kH, kW]
    bias: NDArray[np.float32] | None  # [out_channels]
    groups: int
