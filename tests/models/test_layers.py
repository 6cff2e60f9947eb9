"""Layer introspection: which modules produce feature maps, their shapes, order and names."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

import models
from models.architectures import build_model
from models.layers import call_name, conv_kernels, feature_layers


def _hooked_outputs(root: nn.Module, shape: tuple[int, int, int]) -> list[tuple[str, torch.Size]]:
    """Every (module name, output shape) in the order outputs are produced: an independent count."""
    produced: list[tuple[str, torch.Size]] = []
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: produced.append((name, out.shape))
        )
        for name, module in root.named_modules()
        if name
    ]
    with torch.inference_mode():
        root(torch.zeros((1, *shape)))
    for handle in handles:
        handle.remove()
    return produced


def test_default_model_lists_every_4d_output_in_forward_order() -> None:
    loaded = models.load(models.default_model_path())
    shape = loaded.card.input.shape
    layers = feature_layers(loaded.module, shape)
    expected = [(n, tuple(s[1:])) for n, s in _hooked_outputs(loaded.module, shape) if len(s) == 4]
    assert [(layer.name, layer.output_shape) for layer in layers] == expected
    # The textbook stack: conv/bn/relu blocks, pooling in between, the head (2-D) left out.
    names = [layer.name for layer in layers]
    assert names[:3] == ["conv1", "bn1", "relu1"] and names[-1] == "pool3"
    assert not {"flatten", "dropout", "fc"} & set(names)
    modules = dict(loaded.module.named_modules())
    for layer in layers:
        module = modules[layer.name]
        assert layer.call == 0 and layer.module == layer.name
        assert layer.type == type(module).__name__
        assert layer.parameters == sum(p.numel() for p in module.parameters())
        assert layer.has_kernels == isinstance(module, nn.Conv2d)
        if isinstance(module, nn.Conv2d):
            assert layer.kernel_size == module.kernel_size
            assert layer.stride == module.stride and layer.padding == module.padding
    pool = next(layer for layer in layers if layer.name == "pool1")
    assert pool.describe()["kernel_size"] == [2, 2] and pool.describe()["stride"] == [2, 2]
    assert "kernel_size" not in next(layer for layer in layers if layer.name == "bn1").describe()


def test_resnet_shared_relu_gives_one_name_per_call_as_torchvision_names_them() -> None:
    torch.manual_seed(0)
    module = build_model("resnet18", num_classes=10, in_channels=3).eval()
    layers = feature_layers(module, (3, 64, 64))
    by_name = {layer.name: layer for layer in layers}
    assert len(by_name) == len(layers)  # every name stands for one tensor

    first, second = by_name["layer1.0.relu"], by_name["layer1.0.relu_1"]
    assert (first.module, first.call) == ("layer1.0.relu", 0)
    assert (second.module, second.call) == ("layer1.0.relu", 1)
    names = [layer.name for layer in layers]
    # Order of production: the second relu follows bn2, and the block's own output follows it.
    assert names.index("layer1.0.bn2") < names.index("layer1.0.relu_1") < names.index("layer1.0")
    assert by_name["layer4"].output_shape == (512, 2, 2)
    assert by_name["conv1"].output_shape == (64, 32, 32)

    # Every module-call node torchvision's feature extraction names for these maps is offered.
    _, graph_nodes = get_graph_node_names(module)
    module_names = dict(module.named_modules())
    calls = {n for n in graph_nodes if n.rsplit("_", 1)[0] in module_names and n != "x"}
    four_d = calls - {"flatten", "fc"}
    assert {"layer1.0.relu_1", "layer4.1.relu_1", "maxpool"} <= four_d
    assert four_d <= set(by_name), sorted(four_d - set(by_name))
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(layer.name for layer in layers if layer.has_kernels) == sorted(convs)


def test_call_names_stay_unique_next_to_a_sibling_with_that_name() -> None:
    assert call_name("block.relu", 0, set()) == "block.relu"
    assert call_name("block.relu", 2, set()) == "block.relu_2"
    assert call_name("block.relu", 1, {"block.relu_1"}) == "block.relu_1_"


def test_kernels_are_the_convolution_weights() -> None:
    loaded = models.load(models.default_model_path())
    conv1 = next(
        layer for layer in feature_layers(loaded.module, (1, 28, 28)) if layer.name == "conv1"
    )
    kernels = conv_kernels(loaded.module, conv1)
    weight = dict(loaded.module.named_modules())["conv1"].weight
    np.testing.assert_array_equal(kernels.weights, weight.numpy())
    assert kernels.weights.dtype == np.float32 and kernels.bias is None and kernels.groups == 1
    bn1 = next(layer for layer in feature_layers(loaded.module, (1, 28, 28)) if layer.name == "bn1")
    with pytest.raises(TypeError, match="not a Conv2d"):
        conv_kernels(loaded.module, bn1)


def test_torchscript_offers_no_layers() -> None:
    module = build_model("mnist_cnn", num_classes=10, in_channels=1).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        scripted = torch.jit.script(module)
    assert feature_layers(scripted, (1, 28, 28)) == ()
