from __future__ import annotations

import pytest
import torch
from torch import nn

from models import ARCHITECTURES, UnknownArchitectureError, build_model


def test_default_cnn_layer_names_and_shapes() -> None:
    model = build_model("mnist_cnn", num_classes=10, in_channels=1).eval()
    names = [name for name, _ in model.named_children()]
    assert names[:7] == ["conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "pool1"]
    assert {"conv5", "bn5", "relu5", "pool2", "pool3", "fc"} <= set(names)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name, module in model.named_children()
    ]
    with torch.inference_mode():
        out = model(torch.zeros(2, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    assert tuple(out.shape) == (2, 10)
    assert shapes["conv1"] == (2, 16, 28, 28)
    assert shapes["pool1"] == (2, 16, 14, 14)
    assert shapes["conv4"] == (2, 32, 14, 14)
    assert shapes["conv5"] == (2, 64, 7, 7)
    conv1 = model.get_submodule("conv1")
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.kernel_size == (3, 3) and conv1.padding == (1, 1) and conv1.stride == (1, 1)


@pytest.mark.parametrize("name", sorted(set(ARCHITECTURES) - {"mnist_cnn"}))
def test_torchvision_architectures_take_classes_and_channels(name: str) -> None:
    model = build_model(name, num_classes=7, in_channels=1).eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 1, 64, 64))
    assert tuple(out.shape) == (1, 7)


def test_unknown_architecture_lists_known_ones() -> None:
    with pytest.raises(UnknownArchitectureError, match="resnet18"):
        build_model("alexnet-9000", num_classes=2, in_channels=3)
