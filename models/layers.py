"""Which layers of a network produce feature maps, found by running it once.

A layer is a module whose output is a 4-D tensor [N, C, H, W]: a feature map.
`feature_layers` runs one forward pass on a zero input of the card's size with
a forward hook on every module, and lists, in the order the maps are produced,
each such module with its output shape, parameter count and, for convolutions
and pooling, kernel size, stride and padding. It runs once, at load time.

Names are those of `named_modules()`. A module called more than once in one
forward pass (torchvision ResNet blocks apply their one `relu` after `bn1` and
again after the residual sum) produces one map per call: the first call keeps
the module's name, call i after it is named `<name>_<i>`, as
`torchvision.models.feature_extraction.get_graph_node_names` names the same
nodes (`layer1.0.relu`, `layer1.0.relu_1`). Every map is therefore reachable,
and each name stands for exactly one tensor.

The same pass notes which outputs a later in-place op rewrites (a BatchNorm
followed by ReLU(inplace=True), the `out += identity` of a residual block): the
tensor's version counter moved after the module returned it. Capture must copy
those at once; every other output can be kept as it is, at no cost. CNNs run
the same ops whatever the pixels, so a zero input shows what any input does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from models.feature_layer import FeatureLayer, Kernels


def _pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    return None  # e.g. padding="same": not a pair of numbers


def _geometry(module: nn.Module) -> dict[str, tuple[int, int] | None]:
    """kernel_size, stride and padding of convolutions and pooling layers that have them."""
    if not isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        return {}
    return {key: _pair(getattr(module, key, None)) for key in ("kernel_size", "stride", "padding")}


def call_name(module_name: str, call: int, taken: set[str]) -> str:
    """The user-facing name of one call of a module (see the module docstring)."""
    if call == 0:
        return module_name
    name = f"{module_name}_{call}"
    while name in taken:  # a sibling module already has that name: keep the names unique
        name += "_"
    return name


@dataclass
class _Seen:
    module_name: str
    call: int
    output: torch.Tensor | None
    version: int  # the output's version counter when the module returned it

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.output.shape) if self.output is not None else ()

    @property
    def rewritten(self) -> bool:
        """Did a later in-place op (ReLU(inplace=True), a residual +=) change this output?"""
        return self.output is not None and self.output._version != self.version


@contextmanager
def _recording(root: nn.Module, seen: list[_Seen]) -> Iterator[None]:
    """Forward hooks on every submodule that keep each call's output, in order."""
    calls: dict[str, int] = {}
    handles = []
    for name, module in root.named_modules():
        if not name:
            continue  # the network itself: its output is the logits

        def note(_m: nn.Module, _i: object, output: object, name: str = name) -> None:
            call = calls.get(name, 0)
            calls[name] = call + 1
            if isinstance(output, torch.Tensor):
                seen.append(_Seen(name, call, output, output._version))
            else:
                seen.append(_Seen(name, call, None, 0))

        handles.append(module.register_forward_hook(note))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def feature_layers(root: nn.Module, input_shape: tuple[int, int, int]) -> tuple[FeatureLayer, ...]:
    """The feature-map layers of `root` for one [C,H,W] input, in the order they are computed.

    Networks that do not run submodules as Python modules (TorchScript, torch.export
    programs) fire no hooks and have no layers to offer: the list is empty.
    """
    if isinstance(root, torch.jit.ScriptModule):
        return ()
    seen: list[_Seen] = []
    # no_grad, not inference_mode: only normal tensors count their in-place versions.
    with _recording(root, seen), torch.no_grad():
        root(torch.zeros((1, *input_shape)))
    modules = dict(root.named_modules())
    taken = set(modules)
    layers = []
    for record in seen:
        if len(record.shape) != 4:
            continue
        module = modules[record.module_name]
        name = call_name(record.module_name, record.call, taken)
        taken.add(name)
        layers.append(
            FeatureLayer(
                name=name,
                module=record.module_name,
                call=record.call,
                type=type(module).__name__,
                output_shape=(record.shape[1], record.shape[2], record.shape[3]),
                parameters=sum(p.numel() for p in module.parameters()),
                has_kernels=isinstance(module, nn.Conv2d),
                rewritten=record.rewritten,
                **_geometry(module),
            )
        )
    return tuple(layers)


def conv_kernels(root: nn.Module, layer: FeatureLayer) -> Kernels:
    """The filters of a convolution layer (one with has_kernels) of `root`."""
    conv = root.get_submodule(layer.module)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{layer.module} is a {type(conv).__name__}, not a Conv2d")
    bias = None if conv.bias is None else conv.bias.detach().float().cpu().numpy()
    return Kernels(
        weights=conv.weight.detach().float().cpu().numpy(), bias=bias, groups=conv.groups
    )


@contextmanager
def capturing(
    root: nn.Module, layers: Sequence[FeatureLayer], into: dict[str, torch.Tensor]
) -> Iterator[None]:
    """Keep the maps of `layers` of the next forward pass of `root` in `into`, by layer name.

    One hook per module, counting its calls, keeps the calls asked for: a layer
    is one call of one module (see the module docstring). Outputs a later in-place
    op rewrites are copied as they are made. Use one `with` per forward pass.
    """
    wanted: dict[str, dict[int, FeatureLayer]] = {}
    for layer in layers:
        wanted.setdefault(layer.module, {})[layer.call] = layer
    handles = [
        root.get_submodule(name).register_forward_hook(_keeper(calls, into))
        for name, calls in wanted.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _keeper(
    calls: dict[int, FeatureLayer], into: dict[str, torch.Tensor]
) -> Callable[[nn.Module, object, object], None]:
    count = 0

    def keep(_m: nn.Module, _i: object, output: object) -> None:
        nonlocal count
        layer = calls.get(count)
        count += 1
        if layer is not None and isinstance(output, torch.Tensor):
            into[layer.name] = output.clone() if layer.rewritten else output

    return keep
