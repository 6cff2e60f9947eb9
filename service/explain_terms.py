"""The terms of an explanation request, checked before any work: no torch here.

An HTTP process checks a request with these before it reads the body; the
process that holds the model computes the explanation (service.explanations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from service.errors import InvalidParameter, ServiceError

Method = Literal["gradcam", "gradcam_plus", "saliency", "integrated_gradients", "occlusion"]
Baseline = Literal["black", "blurred"]
METHODS: tuple[str, ...] = get_args(Method)
BASELINES: tuple[str, ...] = get_args(Baseline)
CAM_METHODS = frozenset({"gradcam", "gradcam_plus"})
DEFAULT_STEPS = 32
MAX_STEPS = 256
MAX_OCCLUSION_PASSES = 1024
_MAX_LABELS_SHOWN = 20


class ExplainBudgetExceeded(ServiceError):
    status, code, title = (
        422,
        "explain_budget_exceeded",
        "The explanation would cost more than the server allows",
    )


class UnknownTarget(ServiceError):
    status, code, title = 422, "unknown_target", "The model has no class by that name"


@dataclass(frozen=True)
class Explanation:
    method: str
    target: int
    attribution: NDArray[np.float32]  # [H, W], the input's resolution
    probabilities: NDArray[np.float32]  # [classes], for the same input
    minimum: float = field(init=False)
    maximum: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "minimum", float(self.attribution.min()))
        object.__setattr__(self, "maximum", float(self.attribution.max()))


def default_window(height: int, width: int) -> int:
    """About a seventh of the short side: 4 pixels of a 28x28 digit, 32 of a 224 image."""
    return max(1, round(min(height, width) / 7))


def occlusion_geometry(
    height: int, width: int, window: int | None, stride: int | None
) -> tuple[int, int, int]:
    """(window, stride, forward passes) for an H x W input, checked against the budget."""
    window = window or default_window(height, width)
    stride = stride or max(1, window // 2)
    if window > min(height, width):
        raise InvalidParameter(f"window={window} is larger than the {height}x{width} input")
    if stride > window:
        raise InvalidParameter(f"stride={stride} is larger than window={window}: pixels skipped")
    passes = (math.ceil((height - window) / stride) + 1) * (
        math.ceil((width - window) / stride) + 1
    ) + 1
    if passes > MAX_OCCLUSION_PASSES:
        raise ExplainBudgetExceeded(
            f"occlusion with window={window}, stride={stride} on a {height}x{width} input "
            f"needs {passes} forward passes; the limit is {MAX_OCCLUSION_PASSES}: "
            "use a larger window or stride"
        )
    return window, stride, passes


def resolve_target(
    text: str | None, labels: Sequence[str], probabilities: NDArray[np.floating] | Sequence[float]
) -> int:
    """None or "top1": the predicted class; else a label, or a class index as digits.

    A label wins over an index (labels "1", "2": "1" is class 0).
    """
    if text is None or text.strip() in ("", "top1"):
        return int(np.argmax(np.asarray(probabilities)))
    text = text.strip()
    if text in labels:
        return list(labels).index(text)
    if text.isdigit() and int(text) < len(labels):
        return int(text)
    shown = ", ".join(repr(label) for label in labels[:_MAX_LABELS_SHOWN])
    more = f", ... ({len(labels)} labels in all)" if len(labels) > _MAX_LABELS_SHOWN else ""
    raise UnknownTarget(
        f"target {text!r} is neither a label nor a class index 0-{len(labels) - 1}; "
        f"labels: {shown}{more}"
    )


@dataclass(frozen=True)
class ExplainParams:
    """What a client asked for, as the query said it."""

    method: Method = "gradcam"
    target: str | None = None  # "top1" (None), a label, or a class index
    layer: str | None = None  # CAM methods; None: the last convolutional block
    steps: int = DEFAULT_STEPS
    baseline: Baseline = "black"
    window: int | None = None
    stride: int | None = None


def check_terms(
    method: str, baseline: str, steps: int, window: int | None, stride: int | None
) -> None:
    """The range checks every explanation request passes, whichever process makes it."""
    if method not in METHODS:
        raise InvalidParameter(f"method {method!r} is not one of {', '.join(METHODS)}")
    if baseline not in BASELINES:
        raise InvalidParameter(f"baseline {baseline!r} is not one of black, blurred")
    if not 1 <= steps <= MAX_STEPS:
        raise ExplainBudgetExceeded(f"steps={steps}: must be 1 to {MAX_STEPS}")
    for name, value in (("window", window), ("stride", stride)):
        if value is not None and value < 1:
            raise InvalidParameter(f"{name}={value}: must be at least 1")


def check_params(params: ExplainParams, input_shape: Sequence[int], labels: Sequence[str]) -> None:
    """Refuse, before any work, a request out of range or too costly for a [C, H, W] input."""
    check_terms(params.method, params.baseline, params.steps, params.window, params.stride)
    if params.method == "occlusion":
        occlusion_geometry(input_shape[-2], input_shape[-1], params.window, params.stride)
    if params.target not in (None, "", "top1"):
        resolve_target(params.target, labels, [])  # an unknown label is refused now
