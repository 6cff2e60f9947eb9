"""Attribution maps against Captum's own results, hand computations and known evidence."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency
from torch import nn

from models import LoadedModel, load
from models.architectures import build_model
from models.card import InputSpec
from models.layers import feature_layers
from models.preprocess import Preprocessor
from service.cam import resolve_layer
from service.errors import InvalidParameter, UnknownLayer
from service.explain_terms import (
    MAX_OCCLUSION_PASSES,
    ExplainBudgetExceeded,
    Explanation,
    UnknownTarget,
    occlusion_geometry,
    resolve_target,
)
from service.explanations import ExplainRequest, baseline_input, explain
from service.features import LayerIndex, default_cam_layer
from tests.helpers import ROOT, Digits

MNIST_BLACK = -0.1307 / 0.3081  # the card's normalization of a 0 pixel
RESNET_SPEC = InputSpec(
    channels=3, height=64, width=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


@pytest.fixture(scope="module")
def mnist() -> LoadedModel:
    return load(ROOT / "models" / "weights" / "mnist-cnn.json")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=10, in_channels=3).eval()


@pytest.fixture(scope="module")
def resnet_input() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn((1, 3, 64, 64), generator=generator)


def digit(mnist: LoadedModel, digits: Digits, index: int = 0) -> torch.Tensor:
    return mnist.preprocess(digits.images[index])[None]


def run(
    module: nn.Module,
    x: torch.Tensor,
    preprocess: Preprocessor,
    method: str,
    target: int,
    **kw: object,
) -> Explanation:
    request = ExplainRequest(method, target, **kw)  # type: ignore[arg-type]
    return explain(module, x, request, preprocess=preprocess)


def captum_gradcam(module: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    cam = LayerGradCam(module, layer).attribute(
        x.clone().requires_grad_(True), target=target, relu_attributions=True
    )
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[0, 0].detach().numpy()


# --- each method equals Captum's own result --------------------------------------------


@pytest.mark.parametrize("which", [0, 1])
def test_gradcam_equals_captum_on_the_shipped_model(
    mnist: LoadedModel, digits: Digits, which: int
) -> None:
    x = digit(mnist, digits, 3)
    target = int(digits.labels[3]) if which == 0 else (int(digits.labels[3]) + 5) % 10
    mine = run(mnist.module, x, mnist.preprocess, "gradcam", target, layer=mnist.module.relu5)
    expected = captum_gradcam(mnist.module, mnist.module.relu5, x, target)
    assert mine.attribution.shape == (28, 28)
    assert mine.maximum > 0
    np.testing.assert_allclose(mine.attribution, expected, rtol=1e-5, atol=1e-7)


def test_maps_for_two_classes_differ_and_each_is_captums(
    mnist: LoadedModel, digits: Digits
) -> None:
    x = digit(mnist, digits, 7)
    label = int(digits.labels[7])
    other = (label + 1) % 10
    maps = {
        t: run(mnist.module, x, mnist.preprocess, "saliency", t).attribution for t in (label, other)
    }
    assert not np.allclose(maps[label], maps[other], rtol=0.05, atol=1e-4)
    for target, got in maps.items():
        grads = Saliency(mnist.module).attribute(x.clone().requires_grad_(True), target=target)
        np.testing.assert_allclose(
            got, grads[0].abs().sum(0).detach().numpy(), rtol=1e-5, atol=1e-8
        )


@pytest.mark.parametrize("steps", [32, 50])
def test_integrated_gradients_equals_captum(mnist: LoadedModel, digits: Digits, steps: int) -> None:
    x = digit(mnist, digits, 11)
    target = int(digits.labels[11])
    mine = run(mnist.module, x, mnist.preprocess, "integrated_gradients", target, steps=steps)
    baseline = baseline_input(x, "black", mnist.preprocess)  # checked against -mean/std below
    expected = IntegratedGradients(mnist.module).attribute(
        x.clone().requires_grad_(True), baselines=baseline, target=target, n_steps=steps
    )
    np.testing.assert_allclose(
        mine.attribution, expected[0].sum(0).detach().numpy(), rtol=1e-4, atol=1e-6
    )
    # Completeness: the map sums to S(x) - S(black), up to the quadrature error.
    with torch.no_grad():
        gap = float(mnist.module(x)[0, target] - mnist.module(baseline)[0, target])
    assert mine.attribution.sum() == pytest.approx(gap, rel=0.05)


def test_occlusion_equals_captum(mnist: LoadedModel, digits: Digits) -> None:
    x = digit(mnist, digits, 5)
    target = int(digits.labels[5])
    mine = run(mnist.module, x, mnist.preprocess, "occlusion", target, window=6, stride=3)
    expected = Occlusion(mnist.module).attribute(
        x, sliding_window_shapes=(1, 6, 6), strides=(1, 3, 3), baselines=MNIST_BLACK, target=target
    )
    np.testing.assert_allclose(
        mine.attribution, expected[0].sum(0).detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_every_method_equals_captum_on_a_resnet(
    resnet: nn.Module, resnet_input: torch.Tensor
) -> None:
    x, preprocess, target = resnet_input, Preprocessor(RESNET_SPEC), 3
    layer, module = resolve_layer(resnet, LayerIndex(feature_layers(resnet, (3, 64, 64))), None)
    assert layer.name == "layer4"
    black = baseline_input(x, "black", preprocess)
    leaf = x.clone().requires_grad_(True)
    expected = {
        "gradcam": captum_gradcam(resnet, module, x, target),
        "saliency": Saliency(resnet).attribute(leaf, target=target)[0].abs().sum(0),
        "integrated_gradients": IntegratedGradients(resnet)
        .attribute(leaf, baselines=black, target=target, n_steps=8)[0]
        .sum(0),
        "occlusion": Occlusion(resnet)
        .attribute(
            x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=black, target=target
        )[0]
        .sum(0),
    }
    options = {"layer": module, "steps": 8, "window": 16, "stride": 8}
    for method, want in expected.items():
        got = run(resnet, x, preprocess, method, target, **options).attribution
        want_array = want.detach().numpy() if isinstance(want, torch.Tensor) else want
        assert np.abs(want_array).max() > 0, method
        np.testing.assert_allclose(got, want_array, rtol=1e-4, atol=1e-6, err_msg=method)


def test_black_baseline_is_the_normalized_zero_pixel(resnet_input: torch.Tensor) -> None:
    black = baseline_input(resnet_input, "black", Preprocessor(RESNET_SPEC))
    want = [-m / s for m, s in zip(RESNET_SPEC.mean, RESNET_SPEC.std, strict=True)]
    np.testing.assert_allclose(black[0, :, 0, 0].numpy(), want, rtol=1e-6)
    assert black.shape == resnet_input.shape
    assert bool((black == black[:, :, :1, :1]).all())


def test_blurred_baseline_is_a_gaussian_of_sigma_an_eighth_of_the_side() -> None:
    x = torch.zeros((1, 1, 32, 32))
    x[0, 0, 16, 16] = 1.0
    blurred = baseline_input(x, "blurred", Preprocessor(RESNET_SPEC))[0, 0]
    sigma = 32 / 8
    for distance in (1, 2, 4):
        ratio = float(blurred[16, 16 + distance] / blurred[16, 16])
        assert ratio == pytest.approx(np.exp(-(distance**2) / (2 * sigma**2)), rel=1e-3)
    assert float(blurred.sum()) == pytest.approx(1.0, rel=0.01)


# --- Grad-CAM and Grad-CAM++ by hand on a tiny network -----------------------------------


def tiny_network() -> nn.Sequential:
    """conv (2 channels, stride 2) -> global average pool -> linear, fixed weights."""
    conv = nn.Conv2d(1, 2, kernel_size=3, stride=2, padding=1, bias=False)
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.copy_(
            torch.tensor([[[[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]], [[[0.5] * 3] * 3]])
        )
        linear.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0]]))
        linear.bias.zero_()
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()


def hand_cams(net: nn.Sequential, x: torch.Tensor, target: int) -> tuple[np.ndarray, np.ndarray]:
    """dS/dA_k = W[target, k] / (h w) everywhere, so both CAMs have closed forms."""
    with torch.no_grad():
        a = net[0](x)[0].numpy().astype(np.float64)  # [K, h, w]
    _, h, w = a.shape
    g = net[3].weight[target].detach().numpy().astype(np.float64) / (h * w)  # [K]
    cam = np.maximum((g[:, None, None] * a).sum(0), 0)
    alpha = g**2 / (2 * g**2 + a.sum(axis=(1, 2)) * g**3)  # constant over (i, j)
    plus_weights = h * w * alpha * np.maximum(g, 0)
    plus = np.maximum((plus_weights[:, None, None] * a).sum(0), 0)
    size = tuple(x.shape[-2:])
    up = [
        torch.nn.functional.interpolate(torch.from_numpy(c)[None, None], size, mode="bilinear")
        for c in (cam, plus)
    ]
    return up[0][0, 0].numpy(), up[1][0, 0].numpy()


@pytest.mark.parametrize("target", [0, 1])
def test_cams_equal_a_hand_computation(target: int) -> None:
    net = tiny_network()
    x = torch.rand((1, 1, 6, 10), generator=torch.Generator().manual_seed(target))
    cam, plus = hand_cams(net, x, target)
    preprocess = Preprocessor(InputSpec(channels=1, height=6, width=10, mean=(0.0,), std=(1.0,)))
    got = run(net, x, preprocess, "gradcam", target, layer=net[0]).attribution
    got_plus = run(net, x, preprocess, "gradcam_plus", target, layer=net[0]).attribution
    assert got.shape == (6, 10)
    assert plus.max() > 0
    np.testing.assert_allclose(got, cam, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_plus, plus, rtol=1e-5, atol=1e-6)


# --- maps point where the evidence is: not shifted, flipped or transposed ----------------


def corner_canvas(mnist: LoadedModel, digits: Digits) -> torch.Tensor:
    """A real digit in the bottom-right corner of a 56 x 84 black canvas."""
    canvas = mnist.preprocess.normalize(torch.zeros((1, 1, 56, 84), dtype=torch.uint8))
    canvas[0, 0, 28:, 56:] = digit(mnist, digits, 2)[0, 0]
    return canvas


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcam_plus", "saliency", "integrated_gradients", "occlusion"]
)
def test_the_map_peaks_on_the_digit(mnist: LoadedModel, digits: Digits, method: str) -> None:
    x = corner_canvas(mnist, digits)
    target = int(digits.labels[2])
    result = run(mnist.module, x, mnist.preprocess, method, target, layer=mnist.module.relu5)
    assert result.attribution.shape == (56, 84)
    row, column = np.unravel_index(np.argmax(result.attribution), result.attribution.shape)
    assert row >= 28 and column >= 56, (method, row, column)
    if method in ("integrated_gradients", "occlusion"):  # black pixels change nothing
        far = np.abs(result.attribution[:20, :48]).max()
        assert far <= 1e-5 * result.maximum, (method, far)


# --- the layer, the target, the limits ------------------------------------------------


def test_default_layers(mnist: LoadedModel, resnet: nn.Module) -> None:
    assert default_cam_layer(feature_layers(mnist.module, (1, 28, 28))).name == "relu5"
    assert default_cam_layer(feature_layers(resnet, (3, 64, 64))).name == "layer4"


def test_unknown_layer_lists_the_valid_ones(mnist: LoadedModel) -> None:
    index = LayerIndex(feature_layers(mnist.module, (1, 28, 28)))
    with pytest.raises(UnknownLayer, match=r"'conv9'.*valid layers: conv1, bn1, relu1"):
        resolve_layer(mnist.module, index, "conv9")


def test_a_second_call_of_a_shared_module_is_its_own_layer(
    resnet: nn.Module, resnet_input: torch.Tensor
) -> None:
    index = LayerIndex(feature_layers(resnet, (3, 64, 64)))
    first, module = resolve_layer(resnet, index, "layer4.1.relu")
    second, same = resolve_layer(resnet, index, "layer4.1.relu_1")
    assert module is same and (first.call, second.call) == (0, 1)
    preprocess = Preprocessor(RESNET_SPEC)
    maps = [
        run(resnet, resnet_input, preprocess, "gradcam", 3, layer=module, layer_call=c).attribution
        for c in (0, 1)
    ]
    assert not np.allclose(maps[0], maps[1])
    # Captum's module hook keeps the module's last call: relu_1.
    np.testing.assert_allclose(
        maps[1], captum_gradcam(resnet, module, resnet_input, 3), rtol=1e-4, atol=1e-7
    )


def test_resolve_target() -> None:
    labels = ("cat", "dog", "7")
    probabilities = np.array([0.2, 0.5, 0.3])
    assert resolve_target(None, labels, probabilities) == 1
    assert resolve_target("top1", labels, probabilities) == 1
    assert resolve_target("cat", labels, probabilities) == 0
    assert resolve_target("2", labels, probabilities) == 2
    assert resolve_target("7", labels, probabilities) == 2  # the label "7"
    with pytest.raises(UnknownTarget, match=r"'horse'.*labels: 'cat', 'dog', '7'") as caught:
        resolve_target("horse", labels, probabilities)
    assert caught.value.status == 422
    with pytest.raises(UnknownTarget, match="class index 0-2"):
        resolve_target("3", labels, probabilities)


def test_unknown_target_lists_the_first_twenty_of_many_labels() -> None:
    labels = tuple(f"class{i}" for i in range(30))
    with pytest.raises(UnknownTarget) as caught:
        resolve_target("class30", labels, np.full(30, 1 / 30))
    assert "'class19'" in caught.value.detail and "'class20'" not in caught.value.detail
    assert "30 labels in all" in caught.value.detail


def test_steps_over_the_limit_are_refused() -> None:
    with pytest.raises(ExplainBudgetExceeded, match="steps=257: must be 1 to 256") as caught:
        ExplainRequest("integrated_gradients", 0, steps=257)
    assert caught.value.code == "explain_budget_exceeded"
    with pytest.raises(ExplainBudgetExceeded):
        ExplainRequest("integrated_gradients", 0, steps=0)


def test_occlusion_passes_are_counted_exactly(mnist: LoadedModel, digits: Digits) -> None:
    rows = 0

    def count(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        nonlocal rows
        rows += args[0].shape[0]

    handle = mnist.module.register_forward_pre_hook(count)
    try:
        run(
            mnist.module, digit(mnist, digits), mnist.preprocess, "occlusion", 0, window=5, stride=3
        )
    finally:
        handle.remove()
    _, _, passes = occlusion_geometry(28, 28, 5, 3)
    assert passes == 9 * 9 + 1  # ceil(23 / 3) + 1 = 9 per side, plus the unoccluded pass
    assert rows == passes + 1  # and one more for the probabilities


def test_occlusion_over_budget_is_refused_before_any_work(mnist: LoadedModel) -> None:
    x = torch.zeros((1, 1, 28, 56))
    with pytest.raises(
        ExplainBudgetExceeded, match=f"1569 forward passes; the limit is {MAX_OCCLUSION_PASSES}"
    ):
        run(mnist.module, x, mnist.preprocess, "occlusion", 0, window=1, stride=1)
    with pytest.raises(InvalidParameter, match="stride=5 is larger than window=4"):
        run(mnist.module, x, mnist.preprocess, "occlusion", 0, window=4, stride=5)
    with pytest.raises(InvalidParameter, match="window=30 is larger than the 28x56 input"):
        run(mnist.module, x, mnist.preprocess, "occlusion", 0, window=30)


def test_invalid_requests(mnist: LoadedModel) -> None:
    with pytest.raises(InvalidParameter, match="gradcam needs a layer"):
        ExplainRequest("gradcam", 0)
    with pytest.raises(InvalidParameter, match="method 'lime' is not one of"):
        ExplainRequest("lime", 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match="target 10 is not a class index 0-9"):
        run(mnist.module, torch.zeros((1, 1, 28, 28)), mnist.preprocess, "saliency", 10)


# --- what explain leaves behind ------------------------------------------------------


def hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_no_hooks_grads_or_flags_are_left_behind(
    resnet: nn.Module, resnet_input: torch.Tensor
) -> None:
    requires = [p.requires_grad for p in resnet.parameters()]
    assert all(requires)  # a fresh network: parameters require grad
    preprocess = Preprocessor(RESNET_SPEC)
    expected = run(resnet, resnet_input, preprocess, "gradcam", 1, layer=resnet.layer3).attribution
    resnet.train()
    resnet.layer1.eval()
    try:
        got = run(resnet, resnet_input, preprocess, "gradcam", 1, layer=resnet.layer3).attribution
        assert resnet.training and resnet.layer2.training and not resnet.layer1.training
    finally:
        resnet.eval()
    np.testing.assert_array_equal(got, expected)  # run in eval mode: BatchNorm used its stats
    assert hooks(resnet) == 0
    assert [p.requires_grad for p in resnet.parameters()] == requires
    assert all(p.grad is None for p in resnet.parameters())


def test_frozen_parameters_stay_frozen(mnist: LoadedModel, digits: Digits) -> None:
    for method in ("gradcam_plus", "integrated_gradients"):
        run(
            mnist.module,
            digit(mnist, digits),
            mnist.preprocess,
            method,
            0,
            layer=mnist.module.conv3,
            steps=4,
        )
    assert hooks(mnist.module) == 0
    assert not any(p.requires_grad for p in mnist.module.parameters())


def test_inference_mode_is_refused_and_other_threads_work(
    mnist: LoadedModel, digits: Digits
) -> None:
    x = digit(mnist, digits, 9)
    expected = run(mnist.module, x, mnist.preprocess, "saliency", 4).attribution
    with torch.inference_mode():
        inference_x = digit(mnist, digits, 9)  # as a batch thread would make it
        with pytest.raises(RuntimeError, match="outside torch.inference_mode"):
            run(mnist.module, inference_x, mnist.preprocess, "saliency", 4)
        results: list[Explanation] = []
        worker: Callable[[], None] = lambda: results.append(  # noqa: E731
            run(mnist.module, inference_x, mnist.preprocess, "saliency", 4)
        )
        thread = threading.Thread(target=worker)  # inference mode is per thread
        thread.start()
        thread.join()
    assert inference_x.is_inference()
    np.testing.assert_array_equal(results[0].attribution, expected)
