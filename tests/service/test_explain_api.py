"""POST /v1/models/{name}/explain through the real app, against Captum and direct computation."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Occlusion, Saliency
from PIL import Image

import models
from service.explanations import ExplainRequest, explain
from tests.helpers import ROOT, Digits, png_bytes

PNG = {"content-type": "image/png"}
MNIST = "/v1/models/mnist-cnn"


@pytest.fixture(scope="module")
def mnist() -> models.LoadedModel:
    return models.load(ROOT / "models" / "weights" / "mnist-cnn.json")


def preprocessed(loaded: models.LoadedModel, body: bytes) -> torch.Tensor:
    return loaded.preprocess(Image.open(io.BytesIO(body)))[None]


def attribution(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["attribution"], dtype=np.float32)


def close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-12)
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=1e-3)


async def test_every_method_equals_the_library_computed_directly(
    client: httpx.AsyncClient, digits: Digits, mnist: models.LoadedModel
) -> None:
    body = digits.png(3)
    x = preprocessed(mnist, body)
    module = mnist.module.eval()
    target = int(module(x).argmax())
    black = mnist.preprocess.normalize(torch.zeros((1, 1, 28, 28), dtype=torch.uint8))
    expected = {
        "saliency": Saliency(module).attribute(x.clone().requires_grad_(), target=target).abs(),
        "integrated_gradients": IntegratedGradients(module).attribute(
            x.clone(), black, target=target, n_steps=32, internal_batch_size=32
        ),
        "occlusion": Occlusion(module).attribute(
            x.clone(),
            (1, 4, 4),
            strides=(1, 2, 2),
            baselines=black,
            target=target,
            perturbations_per_eval=64,
        ),
    }
    for method, reference in expected.items():
        response = await client.post(f"{MNIST}/explain?method={method}", content=body, headers=PNG)
        close(attribution(response), reference.sum(dim=1)[0].detach().numpy())
        assert response.json()["target"]["index"] == target
    relu5 = mnist.module.get_submodule("relu5")
    for method in ("gradcam", "gradcam_plus"):
        response = await client.post(f"{MNIST}/explain?method={method}", content=body, headers=PNG)
        assert response.json()["layer"] == "relu5"  # the last convolutional block by default
        request = ExplainRequest(method, target, layer=relu5)  # type: ignore[arg-type]
        direct = explain(module, x, request, preprocess=mnist.preprocess)
        close(attribution(response), direct.attribution)


async def test_the_map_is_for_the_asked_class_at_the_input_resolution(
    client: httpx.AsyncClient, digits: Digits, mnist: models.LoadedModel
) -> None:
    body = digits.png(5)
    x = preprocessed(mnist, body)
    maps = {}
    for target in ("2", "7"):  # labels; "7" as an index is the same class here
        response = await client.post(
            f"{MNIST}/explain?method=saliency&target={target}", content=body, headers=PNG
        )
        assert response.json()["target"] == {"index": int(target), "label": target}
        maps[target] = attribution(response)
        expected = Saliency(mnist.module.eval()).attribute(
            x.clone().requires_grad_(), target=int(target)
        )
        close(maps[target], expected.abs().sum(dim=1)[0].numpy())
    assert not np.allclose(maps["2"], maps["7"])  # a map for the wrong class would fail above
    shifted = np.roll(maps["7"], 1, axis=1)
    assert not np.allclose(shifted, maps["7"])  # and so would a shifted or transposed one
    assert not np.allclose(maps["7"].T, maps["7"])


async def test_png_and_npz_carry_the_same_map(client: httpx.AsyncClient, digits: Digits) -> None:
    body = digits.png(1)
    as_json = await client.post(f"{MNIST}/explain?method=saliency", content=body, headers=PNG)
    npz = await client.post(
        f"{MNIST}/explain?method=saliency&format=npz", content=body, headers=PNG
    )
    arrays = np.load(io.BytesIO(npz.content))
    np.testing.assert_array_equal(arrays["attribution"], attribution(as_json))
    assert int(np.argmax(arrays["probabilities"])) == as_json.json()["prediction"]["index"]
    for view in ("overlay", "heatmap"):
        png = await client.post(
            f"{MNIST}/explain?method=gradcam&format=png&view={view}", content=body, headers=PNG
        )
        assert png.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(png.content))
        assert image.size == (224, 224)  # 28 x 28 enlarged 8 times by default
        assert png.headers["x-explanation-method"] == "gradcam"


@pytest.mark.parametrize(
    ("query", "status", "code", "named"),
    [
        ("target=cat", 422, "unknown_target", "'7'"),
        ("layer=nope", 404, "unknown_layer", "relu5"),
        ("method=integrated_gradients&steps=257", 422, "explain_budget_exceeded", "256"),
        ("method=nope", 422, "invalid_parameter", "gradcam"),
    ],
)
async def test_bad_parameters_are_refused_naming_the_limit(
    client: httpx.AsyncClient, digits: Digits, query: str, status: int, code: str, named: str
) -> None:
    response = await client.post(f"{MNIST}/explain?{query}", content=digits.png(0), headers=PNG)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert named in response.json()["detail"]


async def test_bad_bodies_get_the_classify_errors(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    explain_url, classify_url = f"{MNIST}/explain", f"{MNIST}/classify"
    cases = [
        (b"not an image", PNG),
        (b"{}", {"content-type": "text/plain"}),
    ]
    for body, headers in cases:
        got = await client.post(explain_url, content=body, headers=headers)
        want = await client.post(classify_url, content=body, headers=headers)
        assert (got.status_code, got.json()["code"]) == (want.status_code, want.json()["code"])
    files = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(2)]
    two = await client.post(explain_url, files=files)
    assert two.status_code == 400 and "one image" in two.json()["detail"]


async def test_a_packed_resnet18_explains_with_every_method(
    resnet_client: httpx.AsyncClient, resnet_dir: Path
) -> None:
    rng = np.random.default_rng(3)
    body = png_bytes(Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)))
    loaded = models.load(resnet_dir)
    x = preprocessed(loaded, body)
    module = loaded.module.eval()
    target = int(module(x).argmax())
    base = "/v1/models/resnet18/explain"
    gradcam = await resnet_client.post(base, content=body, headers=PNG)
    assert gradcam.json()["layer"] == "layer4"
    request = ExplainRequest("gradcam", target, layer=module.get_submodule("layer4"))
    close(
        attribution(gradcam), explain(module, x, request, preprocess=loaded.preprocess).attribution
    )
    saliency = await resnet_client.post(f"{base}?method=saliency", content=body, headers=PNG)
    expected = Saliency(module).attribute(x.clone().requires_grad_(), target=target)
    close(attribution(saliency), expected.abs().sum(dim=1)[0].numpy())
    # 224 x 224 pixels occluded two by two: 12,545 forward passes, over the budget.
    costly = await resnet_client.post(
        f"{base}?method=occlusion&window=2&stride=2", content=body, headers=PNG
    )
    assert costly.status_code == 422 and costly.json()["code"] == "explain_budget_exceeded"
    assert "12545" in costly.json()["detail"] and "1024" in costly.json()["detail"]
    for method in ("gradcam_plus", "integrated_gradients", "occlusion"):
        query = f"{base}?method={method}&steps=8&layer=layer3.1.relu_1"
        answer = await resnet_client.post(query, content=body, headers=PNG)
        assert answer.status_code == 200, answer.text
        assert attribution(answer).shape == (224, 224)
