"""Feature-map endpoints through the real app: values equal forward hooks, one pass, every format."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch
from asgi_lifespan import LifespanManager
from numpy.typing import NDArray
from PIL import Image
from torch import nn

import models
from models.layers import feature_layers
from service.app import create_app
from service.batching import Batcher
from service.devices import plan_for
from service.engine import Engine
from service.features import NpzStream
from service.rendering import VIRIDIS, default_kernel_scale, minmax_levels, parse_channels
from service.settings import Settings
from tests.conftest import AppClientFactory
from tests.helpers import Digits, png_bytes

PNG = {"content-type": "image/png"}
MAPS = "/v1/models/mnist-cnn/feature-maps"


def reference_calls(
    module: nn.Module, batch: torch.Tensor, autocast: torch.dtype | None = None
) -> dict[str, list[NDArray[np.float32]]]:
    """Plain forward hooks on every module: each call's output, cloned, as float32."""
    calls: dict[str, list[NDArray[np.float32]]] = {}

    def keep(name: str) -> Any:
        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            calls.setdefault(name, []).append(out.detach().float().clone()[0].numpy())

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in module.named_modules() if n]
    context = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
    with torch.inference_mode(), context:
        module(batch)
    for handle in handles:
        handle.remove()
    return calls


def assert_maps_equal(actual: Any, expected: NDArray[np.float32], rtol: float = 1e-5) -> None:
    actual = np.asarray(actual, dtype=np.float32)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max()) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _default_reference(digits: Digits, index: int) -> tuple[models.LoadedModel, dict[str, Any]]:
    loaded = models.load(models.default_model_path())
    image = Image.open(io.BytesIO(digits.png(index)))
    return loaded, reference_calls(loaded.module, loaded.preprocess(image)[None])


async def test_fp32_maps_of_every_layer_equal_forward_hooks(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    loaded, reference = _default_reference(digits, 3)
    listing = (await client.get("/v1/models/mnist-cnn/layers")).json()
    names = [entry["name"] for entry in listing["layers"]]
    expected_layers = feature_layers(loaded.module, loaded.card.input.shape)
    assert listing["layers"] == [layer.describe() for layer in expected_layers]

    response = await client.post(f"{MAPS}?include=values", content=digits.png(3), headers=PNG)
    assert response.status_code == 200, response.text
    assert len(response.content) < 5 * 1024 * 1024  # every layer, with values
    body = response.json()
    assert body["dtype"] == "float32"
    assert [entry["name"] for entry in body["layers"]] == names
    for entry in body["layers"]:
        expected = reference[entry["name"]][0]
        assert entry["shape"] == list(expected.shape)
        assert_maps_equal(entry["values"], expected)
        per_channel = expected.reshape(expected.shape[0], -1)
        np.testing.assert_allclose(entry["stats"]["mean"], per_channel.mean(1), atol=1e-5)
        np.testing.assert_allclose(entry["stats"]["max"], per_channel.max(1), atol=0)
        np.testing.assert_allclose(entry["stats"]["zeros"], (per_channel == 0).mean(1))
    logits = reference_calls(loaded.module, loaded.preprocess(digits.images[3])[None])["fc"][0]
    assert body["prediction"]["index"] == int(np.argmax(logits)) == int(digits.labels[3])

    npz = await client.post(
        f"{MAPS}?format=npz&layers=relu4,conv1", content=digits.png(3), headers=PNG
    )
    assert npz.status_code == 200 and len(npz.content) == int(npz.headers["content-length"])
    assert npz.headers["x-prediction-index"] == str(body["prediction"]["index"])
    arrays = np.load(io.BytesIO(npz.content))
    assert arrays.files == ["conv1", "relu4"]  # forward order
    for name in arrays.files:
        assert arrays[name].dtype == np.float32
        assert_maps_equal(arrays[name], reference[name][0])


async def test_reduced_precision_states_its_dtype_and_matches_autocast(
    app_client: AppClientFactory, digits: Digits
) -> None:
    loaded = models.load(models.default_model_path())
    batch = loaded.preprocess(digits.images[5])[None]
    reference = reference_calls(loaded.module, batch, autocast=torch.bfloat16)
    full = reference_calls(loaded.module, batch)
    async with app_client(precision="bf16") as client:
        body = (
            await client.post(
                f"{MAPS}?layers=conv1,conv5,relu5&include=values",
                content=digits.png(5),
                headers=PNG,
            )
        ).json()
        npz = await client.post(
            f"{MAPS}?format=npz&layers=conv5", content=digits.png(5), headers=PNG
        )
    assert body["dtype"] == "bfloat16" and npz.headers["x-feature-dtype"] == "bfloat16"
    for entry in body["layers"]:
        assert_maps_equal(entry["values"], reference[entry["name"]][0])
    # And it is the reduced precision that was used: fp32 maps differ from these.
    assert not np.array_equal(np.asarray(body["layers"][1]["values"]), full["conv5"][0])


async def test_png_grid_of_a_layer_and_kernels(client: httpx.AsyncClient, digits: Digits) -> None:
    _, reference = _default_reference(digits, 7)
    response = await client.post(
        f"{MAPS}?format=png&layers=conv1&channels=0-3&scale=2", content=digits.png(7), headers=PNG
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    grid = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert grid.shape == (2 * 56 + 1, 2 * 56 + 1, 3)  # 2x2 tiles of 56 px, 1-px gutter
    assert (grid[56, :] == 255).all() and (grid[:, 56] == 255).all()
    expected = minmax_levels(reference["conv1"][0][:4])
    tile = grid[0:56, 57:113][::2, ::2].astype(int)  # channel 1, scale undone
    distance = ((tile[:, :, None, :] - VIRIDIS[None, None].astype(int)) ** 2).sum(-1)
    assert np.abs(distance.argmin(-1) - expected[1].astype(int)).max() <= 2

    later = await client.post(
        f"{MAPS}?format=png&layers=relu5&scale=4", content=digits.png(7), headers=PNG
    )
    channels = reference["relu5"][0].shape[0]
    columns = int(np.ceil(np.sqrt(channels)))
    side = 7 * 4
    assert Image.open(io.BytesIO(later.content)).size[0] == columns * (side + 1) - 1

    kernels = await client.get("/v1/models/mnist-cnn/layers/conv1/kernels?format=json")
    conv1 = dict(models.load(models.default_model_path()).module.named_modules())["conv1"]
    weights = np.asarray(kernels.json()["weights"], dtype=np.float32)
    np.testing.assert_array_equal(weights, conv1.weight.numpy())
    image = await client.get("/v1/models/mnist-cnn/layers/conv1/kernels?scale=4")
    tiles = Image.open(io.BytesIO(image.content))
    out_channels = conv1.weight.shape[0]
    per_row = int(np.ceil(np.sqrt(out_channels)))
    assert tiles.size[0] == per_row * (3 * 4 + 1) - 1


async def test_feature_map_errors_are_problem_json(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    unknown = await client.post(f"{MAPS}?layers=conv1,nope", content=digits.png(0), headers=PNG)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_layer"
    assert "'nope'" in unknown.json()["detail"] and "conv1, bn1, relu1" in unknown.json()["detail"]
    kernels = await client.get("/v1/models/mnist-cnn/layers/relu1/kernels")
    assert kernels.status_code == 422 and kernels.json()["code"] == "not_convolution"
    assert "conv1" in kernels.json()["detail"]
    missing = await client.get("/v1/models/mnist-cnn/layers/nope/kernels")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_layer"
    cases = [
        "format=png",  # png draws one layer
        "format=png&layers=conv1&channels=0-999",
        "format=png&layers=conv1&channels=x",
        "layers=conv1&channels=0-3",  # channels: png only
        "layers=conv1&scale=2",
        "format=gif",
        "top_k=11",
    ]
    for query in cases:
        response = await client.post(f"{MAPS}?{query}", content=digits.png(0), headers=PNG)
        assert response.status_code == 422, query
        assert response.json()["code"] == "invalid_parameter", query
    files = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(2)]
    two = await client.post(MAPS, files=files)
    assert two.status_code == 400 and two.json()["code"] == "invalid_body"
    assert (await client.post(MAPS, content=b"nope", headers=PNG)).json()["code"] == "invalid_image"
    after = await client.post(f"{MAPS}?layers=conv1", content=digits.png(0), headers=PNG)
    assert after.status_code == 200


async def test_different_layer_sets_share_one_batch(digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    engine = Engine(loaded, plan_for("cpu", "fp32"))
    batcher = Batcher("m", [engine], max_batch_size=8, max_delay_s=0.0, max_queue_images=8)
    pixels = [torch.from_numpy(loaded.preprocess.to_uint8(digits.images[i]))[None] for i in (1, 2)]
    deadline = time.monotonic() + 30
    first = asyncio.create_task(batcher.submit(pixels[0], deadline=deadline, capture={"conv1"}))
    second = asyncio.create_task(
        batcher.submit(pixels[1], deadline=deadline, capture=frozenset({"relu3", "pool3"}))
    )
    await asyncio.sleep(0.01)  # both queued before the worker starts: one batch
    batcher.start()
    try:
        results = await asyncio.gather(first, second)
    finally:
        batcher.stop(5)
    assert [r.batch_size for r in results] == [2, 2]
    assert set(results[0].features) == {"conv1"}
    assert set(results[1].features) == {"relu3", "pool3"}
    for result, index in zip(results, (1, 2), strict=True):
        reference = reference_calls(loaded.module, loaded.preprocess(digits.images[index])[None])
        for name, maps in result.features.items():
            assert_maps_equal(maps[0], reference[name][0])


def _small_net(shared: bool) -> nn.Module:
    relu = nn.ReLU()
    block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)]
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), relu, block, relu if shared else nn.ReLU())
    net.extend(head)
    net[2][1].running_mean.uniform_(-1, 1)  # a BatchNorm that changes its input
    return net.eval()


@pytest.mark.parametrize("shared", [False, True])
def test_capture_of_nested_rewritten_and_shared_modules(digits: Digits, shared: bool) -> None:
    card = models.load(models.default_model_path()).card
    loaded = models.LoadedModel(module=_small_net(shared), card=card, path=Path("small"))
    layers = feature_layers(loaded.module, card.input.shape)
    by_name = {layer.name: layer for layer in layers}
    assert by_name["2.1"].rewritten  # the block's in-place ReLU overwrites its BatchNorm
    assert ("1_1" in by_name) == shared  # a module used twice gives two names
    engine = Engine(loaded, plan_for("cpu", "fp32"), layers)
    pixels = torch.from_numpy(loaded.preprocess.to_uint8(digits.images[9]))[None]
    output = engine.run([pixels], frozenset(by_name))
    reference = reference_calls(loaded.module, loaded.preprocess(digits.images[9])[None])
    for layer in layers:
        assert_maps_equal(output.features[layer.name][0], reference[layer.module][layer.call])
    assert not np.array_equal(output.features["2.1"], output.features["2.2"])


async def test_npz_streams_layer_by_layer(digits: Digits) -> None:
    app = create_app(Settings(torch_threads=1, preprocess_workers=1))
    messages: list[dict[str, Any]] = []
    body = digits.png(0)

    sent_all = asyncio.Event()
    requests = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict[str, Any]:
        message = next(requests, None)
        if message is None:  # the body was read: the client stays until the answer is in
            await sent_all.wait()
            return {"type": "http.disconnect"}
        return message

    async def send(message: Any) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            sent_all.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": MAPS,
        "raw_path": MAPS.encode(),
        "query_string": b"format=npz&layers=conv1,conv2,conv3",
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    async with LifespanManager(app) as manager:
        await manager.app(scope, receive, send)
    parts = [m["body"] for m in messages if m["type"] == "http.response.body" and m["body"]]
    assert len(parts) >= 3  # one per layer at least, never one joined body
    assert sorted(np.load(io.BytesIO(b"".join(parts))).files) == ["conv1", "conv2", "conv3"]


def _photo() -> bytes:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(240, 300, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(pixels))


async def test_resnet18_every_layer_and_every_call_equals_forward_hooks(
    resnet_client: httpx.AsyncClient, resnet_dir: Path
) -> None:
    photo = _photo()
    loaded = models.load(resnet_dir)
    reference = reference_calls(
        loaded.module, loaded.preprocess(Image.open(io.BytesIO(photo)))[None]
    )
    base = "/v1/models/resnet18"
    layers = (await resnet_client.get(f"{base}/layers")).json()["layers"]
    assert {"layer1.0.relu", "layer1.0.relu_1", "layer4", "avgpool"} <= {e["name"] for e in layers}
    npz = await resnet_client.post(f"{base}/feature-maps?format=npz", content=photo, headers=PNG)
    assert npz.status_code == 200, npz.text
    arrays = np.load(io.BytesIO(npz.content))
    assert arrays.files == [entry["name"] for entry in layers]
    for entry in layers:
        assert list(arrays[entry["name"]].shape) == entry["output_shape"]
        assert_maps_equal(arrays[entry["name"]], reference[entry["module"]][entry["call"]])
    # The shared relu's second call is the block's output; its first is not.
    np.testing.assert_array_equal(arrays["layer1.0.relu_1"], arrays["layer1.0"])
    assert not np.array_equal(arrays["layer1.0.relu"], arrays["layer1.0.relu_1"])

    everything = await resnet_client.post(
        f"{base}/feature-maps?include=values", content=photo, headers=PNG
    )
    assert everything.status_code == 413 and everything.json()["code"] == "response_too_large"
    stated = int(everything.json()["detail"].split(" would be ")[1].split(" bytes")[0])
    assert stated > Settings().max_response_bytes
    kernels = await resnet_client.get(f"{base}/layers/conv1/kernels?scale=2")
    width, height = Image.open(io.BytesIO(kernels.content)).size
    assert (width, height) == (3 * 15 - 1, 64 * 15 - 1)  # 64 filters x 3 inputs of 7x7 at 2x


def test_viridis_table_is_viridis_and_rises_in_lightness() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    original = np.asarray(matplotlib.colormaps["viridis"].colors) * 255.0
    assert VIRIDIS.shape == (256, 3)
    assert np.abs(VIRIDIS.astype(float) - original).max() <= 2.5
    luma = VIRIDIS.astype(float) @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luma[::8]) > 0).all()


def test_kernel_grids_of_wide_layers_shrink_to_fit() -> None:
    assert default_kernel_scale(np.zeros((16, 1, 3, 3), np.float32)) == 8
    assert default_kernel_scale(np.zeros((256, 256, 3, 3), np.float32)) == 4
    assert default_kernel_scale(np.zeros((512, 512, 3, 3), np.float32)) == 2
    assert default_kernel_scale(np.zeros((64, 3, 7, 7), np.float32)) == 3


def test_channel_ranges_and_npz_size() -> None:
    assert parse_channels("0-3,7,2", 10) == [0, 1, 2, 3, 7]
    assert parse_channels(None, 3) == [0, 1, 2]
    maps = {"a": np.ones((3, 5, 5), np.float32), "layer1.0.relu_1": np.zeros((2, 1, 1), np.float32)}
    stream = NpzStream(maps)
    data = b"".join(stream.chunks())
    assert len(data) == stream.size
    loaded = np.load(io.BytesIO(data))
    assert orjson.dumps(sorted(loaded.files)) == b'["a","layer1.0.relu_1"]'
