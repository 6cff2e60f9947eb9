"""Attribution maps: which input pixels drove one class score. Torch-side; knows no HTTP.

Methods, each giving one float32 map at the input's resolution [H, W]:

- gradcam, gradcam_plus: a layer's class activation map (service/cam.py),
  upsampled bilinearly to H x W as Captum's LayerAttribution.interpolate does.
- saliency: |dS/dx| (Captum Saliency), summed over channels (abs-sum).
- integrated_gradients: Captum IntegratedGradients from a baseline in `steps`
  steps (Gauss-Legendre), summed over channels (signed sum: the sum over all
  pixels approximates S(x) - S(baseline)).
- occlusion: Captum Occlusion; a `window` x `window` square of all channels is
  replaced by the baseline every `stride` pixels; a pixel's value is the mean
  drop of S over the windows covering it, summed over channels (every channel
  of a pixel gets the same value, so the sum is C times it).

S is the target class's logit (before softmax). Baselines, in the model's
preprocessed space: "black" is the preprocessed value of an all-zero pixel
image (normalize(0) = -mean/std per channel; MNIST's background);
"blurred" is the input under a Gaussian blur of sigma = min(H, W) / 8.

Budgets: IG takes 1..MAX_STEPS steps; occlusion runs ceil((H - window) /
stride + 1) * ceil((W - window) / stride + 1) + 1 forward passes (Captum's
count, plus the unoccluded one), at most MAX_OCCLUSION_PASSES.

The caller must not hold torch.inference_mode (gradients cannot flow through
inference tensors): run explain from a thread that is outside it. The module
runs in eval mode and its training flags are put back after; parameters'
requires_grad is never touched (gradients are taken with respect to the input),
and the one hook Grad-CAM sets is removed before returning. That hook would
see any other forward pass on the same module meanwhile: run explanations on
the module's own lane, not beside its batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torchvision.transforms.v2 import functional as tvf

from models.preprocess import Preprocessor
from service.cam import activation_and_gradient, grad_cam, grad_cam_plus
from service.errors import InvalidParameter
from service.explain_terms import (
    CAM_METHODS,
    DEFAULT_STEPS,
    Baseline,
    Explanation,
    Method,
    check_terms,
    occlusion_geometry,
)

_IG_BATCH = 32  # IG steps per forward pass: bounds memory whatever `steps` is
_OCCLUSION_BATCH = 64  # occluded copies per forward pass


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain. `target` is a class index (see resolve_target); `layer` is for CAMs."""

    method: Method
    target: int
    layer: nn.Module | None = None  # the module of a FeatureLayer (see service.cam.resolve_layer)
    layer_call: int = 0  # which call of that module (FeatureLayer.call)
    steps: int = DEFAULT_STEPS
    baseline: Baseline = "black"
    window: int | None = None  # occlusion: side of the square, pixels; None: default_window
    stride: int | None = None  # occlusion: None: half the window

    def __post_init__(self) -> None:
        check_terms(self.method, self.baseline, self.steps, self.window, self.stride)
        if self.target < 0:
            raise InvalidParameter(f"target {self.target} is negative")
        if self.method in CAM_METHODS and self.layer is None:
            raise InvalidParameter(f"{self.method} needs a layer")


def check_budget(request: ExplainRequest, input_shape: Sequence[int]) -> None:
    """Refuse, before any work, a request too costly for a [C, H, W] input."""
    if request.method == "occlusion":
        occlusion_geometry(input_shape[-2], input_shape[-1], request.window, request.stride)


def baseline_input(x: torch.Tensor, kind: Baseline, preprocess: Preprocessor) -> torch.Tensor:
    """The reference input of IG and occlusion, shaped like `x` (see the module docstring)."""
    if kind == "black":
        zeros = torch.zeros(x.shape, dtype=torch.uint8)
        return preprocess.normalize(zeros).to(device=x.device, dtype=x.dtype)
    short = min(x.shape[-2:])
    sigma = short / 8
    size = min(2 * math.ceil(3 * sigma) + 1, short - (1 - short % 2))  # odd, within the image
    blurred: torch.Tensor = tvf.gaussian_blur(
        x.detach(), kernel_size=[size, size], sigma=[sigma, sigma]
    )
    return blurred


def _cam(module: nn.Module, x: torch.Tensor, request: ExplainRequest) -> torch.Tensor:
    from captum.attr import LayerAttribution  # captum on first use: start-up and memory

    assert request.layer is not None  # checked by ExplainRequest
    activation, gradient = activation_and_gradient(
        module, x, request.layer, request.layer_call, request.target
    )
    combine = grad_cam_plus if request.method == "gradcam_plus" else grad_cam
    cam = combine(activation, gradient)
    upsampled: torch.Tensor = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    return upsampled[0, 0]


def _saliency(module: nn.Module, x: torch.Tensor, request: ExplainRequest) -> torch.Tensor:
    from captum.attr import Saliency  # captum on first use: start-up and memory

    grads: torch.Tensor = Saliency(module).attribute(x, target=request.target, abs=True)
    return grads[0].sum(dim=0)  # abs-sum over channels


def _integrated_gradients(
    module: nn.Module, x: torch.Tensor, request: ExplainRequest, baseline: torch.Tensor
) -> torch.Tensor:
    from captum.attr import IntegratedGradients  # captum on first use: start-up and memory

    attributions: torch.Tensor = IntegratedGradients(module).attribute(
        x,
        baselines=baseline,
        target=request.target,
        n_steps=request.steps,
        internal_batch_size=min(request.steps, _IG_BATCH),
    )
    return attributions[0].sum(dim=0)


def _occlusion(
    module: nn.Module, x: torch.Tensor, request: ExplainRequest, baseline: torch.Tensor
) -> torch.Tensor:
    from captum.attr import Occlusion  # captum on first use: start-up and memory

    channels, height, width = x.shape[1:]
    window, stride, _ = occlusion_geometry(height, width, request.window, request.stride)
    with torch.no_grad():  # forward passes only
        attributions: torch.Tensor = Occlusion(module).attribute(
            x.detach(),
            sliding_window_shapes=(channels, window, window),
            strides=(channels, stride, stride),
            baselines=baseline,
            target=request.target,
            perturbations_per_eval=_OCCLUSION_BATCH,
        )
    return attributions[0].sum(dim=0)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own training flag back."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in flags:
            submodule.training = training


def _probabilities(module: nn.Module, x: torch.Tensor) -> NDArray[np.float32]:
    with torch.no_grad():
        logits = module(x.detach()).float()
    probabilities: NDArray[np.float32] = torch.softmax(logits, dim=1)[0].cpu().numpy()
    return probabilities


def _attribute(
    module: nn.Module, x: torch.Tensor, request: ExplainRequest, preprocess: Preprocessor
) -> torch.Tensor:
    if request.method in CAM_METHODS:
        return _cam(module, x, request)
    if request.method == "saliency":
        return _saliency(module, x, request)
    baseline = baseline_input(x, request.baseline, preprocess)
    if request.method == "occlusion":
        return _occlusion(module, x, request, baseline)
    return _integrated_gradients(module, x, request, baseline)


def explain(
    module: nn.Module, x: torch.Tensor, request: ExplainRequest, *, preprocess: Preprocessor
) -> Explanation:
    """The attribution map of `request.target` for one preprocessed input x [1, C, H, W].

    `preprocess` is the model's (it defines the black baseline). See the module
    docstring for the methods, the threading rule and what is left untouched.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("explain needs gradients: call it outside torch.inference_mode")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"explain takes one image [1, C, H, W], got {list(x.shape)}")
    check_budget(request, tuple(x.shape[1:]))
    with _eval_mode(module), torch.enable_grad():
        probabilities = _probabilities(module, x)
        if request.target >= len(probabilities):
            raise InvalidParameter(
                f"target {request.target} is not a class index 0-{len(probabilities) - 1}"
            )
        # A fresh leaf that requires grad: Captum would otherwise set it on the caller's
        # tensor (and warn); an inference tensor from the preprocessing thread becomes normal.
        inputs = x.detach().clone().float().requires_grad_(True)
        attribution = _attribute(module, inputs, request, preprocess)
    values = attribution.detach().float().cpu().numpy().astype(np.float32)
    return Explanation(request.method, request.target, values, probabilities)
