"""Class activation maps: Grad-CAM and Grad-CAM++ from one layer's activations and gradients.

Both need the activation A of one layer call and dS/dA, the gradient of the
class score S (the logit, before softmax) with respect to it. They are taken
here by hand rather than through Captum's LayerGradCam for two reasons: a
layer name may be the second call of a shared module (ResNet's `relu_1`, see
models/layers.py), which Captum's module hook cannot tell from the first; and
Grad-CAM++, which Captum lacks, needs the same two tensors.

Grad-CAM (Selvaraju et al., 2017): w_k = mean over (i, j) of dS/dA_k(i, j);
cam = ReLU(sum_k w_k A_k). The arithmetic is Captum's LayerGradCam with
relu_attributions=True, which the tests check.

Grad-CAM++ (Chattopadhyay et al., 2018, eq. 19 with Y = exp(S)): with
g = dS/dA, alpha_k(i, j) = g^2 / (2 g^2 + sum_ab A_k(a, b) g^3) (0 where the
denominator is 0), w_k = sum_ij alpha_k(i, j) ReLU(g(i, j)), cam = ReLU(sum_k
w_k A_k). The closed form holds where the network is piecewise linear (ReLU,
max-pooling: second derivatives of S vanish), the case the paper derives it
for; exp(S) cancels in alpha and only scales w by a positive constant, which
is dropped. It costs the same single backward pass as Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from models.feature_layer import FeatureLayer
from service.errors import InvalidParameter
from service.features import LayerIndex, default_cam_layer


def resolve_layer(
    root: nn.Module, index: LayerIndex, name: str | None
) -> tuple[FeatureLayer, nn.Module]:
    """A layer name (None: the default) -> its FeatureLayer and module; unknown names list valid ones."""
    layer = default_cam_layer(index.layers) if name is None else index.get(name)
    return layer, root.get_submodule(layer.module)


@contextmanager
def _keeping(layer: nn.Module, call: int, kept: list[torch.Tensor]) -> Iterator[None]:
    """Keep the output of one call of `layer`; later in-place ops act on a copy, not on it."""
    calls = 0

    def keep(_m: nn.Module, _i: object, output: object) -> object:
        nonlocal calls
        calls += 1
        if calls - 1 != call or not isinstance(output, torch.Tensor):
            return None
        kept.append(output)
        return output.clone()  # the network goes on with the copy: `output` stays as computed

    handle = layer.register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()


def activation_and_gradient(
    root: nn.Module, x: torch.Tensor, layer: nn.Module, call: int, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A and dS_target/dA of one layer call, for an input `x` that requires grad."""
    kept: list[torch.Tensor] = []
    with _keeping(layer, call, kept):
        logits = root(x)
    if not kept:
        raise InvalidParameter(f"the layer produced no feature map on call {call}")
    (gradient,) = torch.autograd.grad(logits[0, target], kept[0])
    return kept[0].detach(), gradient.detach()


def grad_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """[1,K,h,w] activations and gradients -> [1,1,h,w] Grad-CAM."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activation).sum(dim=1, keepdim=True))


def grad_cam_plus(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """[1,K,h,w] activations and gradients -> [1,1,h,w] Grad-CAM++ (see the module docstring)."""
    g2 = gradient.pow(2)
    denominator = 2 * g2 + activation.sum(dim=(2, 3), keepdim=True) * gradient.pow(3)
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    weights = (alpha * torch.relu(gradient)).sum(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activation).sum(dim=1, keepdim=True))
