"""Network definitions and the registry that builds them by name.

Every builder is keyword-only and takes the number of classes and input
channels, so a user's own trained weights for any registered architecture can
be served. Nothing here downloads weights: builders start from random init.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision import models as tvm

from models.errors import UnknownArchitectureError

ModelBuilder = Callable[..., nn.Module]


def _conv_block(index: int, in_ch: int, out_ch: int) -> list[tuple[str, nn.Module]]:
    """conv{i} -> bn{i} -> relu{i}: 3x3 kernels, stride 1, padding 1 keep the size."""
    return [
        (f"conv{index}", nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)),
        (f"bn{index}", nn.BatchNorm2d(out_ch)),
        (f"relu{index}", nn.ReLU(inplace=False)),
    ]


class MnistCNN(nn.Sequential):
    """A textbook CNN for 28x28 digits, with a readable top-level name on every layer.

    Two VGG-style stages (two 3x3 convolutions, then 2x2 max pooling) halve the
    map size while doubling channels (16 -> 32); a fifth convolution widens to
    64 before global average pooling and a small linear head. About 5.5 M
    multiply-adds per digit: small enough that serving overhead, not the model,
    decides throughput. The layers sit
    flat in one Sequential so `named_modules()` names them `conv1`, `bn1`, ...,
    the names users ask for feature maps by.
    Feature maps: 28x28 (conv1-2), 14x14 (conv3-4), 7x7 (conv5).
    """

    def __init__(
        self, *, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.2
    ) -> None:
        layers: list[tuple[str, nn.Module]] = []
        layers += _conv_block(1, in_channels, 16)
        layers += _conv_block(2, 16, 16)
        layers.append(("pool1", nn.MaxPool2d(kernel_size=2, stride=2)))
        layers += _conv_block(3, 16, 32)
        layers += _conv_block(4, 32, 32)
        layers.append(("pool2", nn.MaxPool2d(kernel_size=2, stride=2)))
        layers += _conv_block(5, 32, 64)
        layers += [
            ("pool3", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("dropout", nn.Dropout(p=dropout)),
            ("fc", nn.Linear(64, num_classes)),
        ]
        super().__init__(OrderedDict(layers))


def _adapt_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap the stem convolution of a torchvision model for one with `in_channels` inputs."""
    if in_channels == 3:
        return model
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(
                parent,
                attr,
                nn.Conv2d(
                    in_channels,
                    module.out_channels,
                    kernel_size=module.kernel_size,  # type: ignore[arg-type]
                    stride=module.stride,  # type: ignore[arg-type]
                    padding=module.padding,  # type: ignore[arg-type]
                    bias=module.bias is not None,
                ),
            )
            return model
    raise ValueError("no 3-channel stem convolution found")


def _torchvision(builder: Callable[..., nn.Module]) -> ModelBuilder:
    def build(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        return _adapt_first_conv(
            builder(weights=None, num_classes=num_classes, **kwargs), in_channels
        )

    return build


ARCHITECTURES: dict[str, ModelBuilder] = {
    "mnist_cnn": MnistCNN,
    "resnet18": _torchvision(tvm.resnet18),
    "resnet34": _torchvision(tvm.resnet34),
    "resnet50": _torchvision(tvm.resnet50),
    "mobilenet_v3_small": _torchvision(tvm.mobilenet_v3_small),
    "mobilenet_v3_large": _torchvision(tvm.mobilenet_v3_large),
    "efficientnet_b0": _torchvision(tvm.efficientnet_b0),
}


def build_model(name: str, *, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build a registered architecture with random weights."""
    try:
        builder = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnknownArchitectureError(f"unknown architecture {name!r}; known: {known}") from None
    return builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
