"""The Open Inference Protocol (KServe V2) endpoints through the real app and its lifespan.

Binary requests are built, and binary responses read, by tritonclient's own
codec (generate_request_body / parse_response_body): an independent
implementation of the wire format on the other side.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from numpy.typing import NDArray

import models
from service.v2.codec import RequestedOutput
from service.v2.infer import (
    INLINE_BINARY_BYTES,
    INLINE_ENCODE_NUMBERS,
    INLINE_JSON_BYTES,
    STRING_NUMBERS,
    _encodes_in_place,
    _parses_in_place,
)
from tests.conftest import AppClientFactory
from tests.helpers import Digits

MODEL = "/v2/models/mnist-cnn"
INFER = f"{MODEL}/infer"
HEADER = "Inference-Header-Content-Length"
COUNT = 8


@dataclass(frozen=True)
class Reference:
    """The first COUNT held-out digits, prepared and predicted in process by models.load."""

    normalized: NDArray[np.float32]  # [N,1,28,28]
    pixels: NDArray[np.uint8]  # [N,1,28,28]
    probabilities: NDArray[np.float32]
    logits: NDArray[np.float32]
    pngs: list[bytes]


@pytest.fixture(scope="module")
def reference(digits: Digits) -> Reference:
    loaded = models.load(models.default_model_path())
    images = digits.images[:COUNT]
    normalized = torch.stack([loaded.preprocess(image) for image in images])
    with torch.inference_mode():
        logits = loaded.module(normalized)
    return Reference(
        normalized=normalized.numpy(),
        pixels=np.stack([loaded.preprocess.to_uint8(image) for image in images]),
        probabilities=torch.softmax(logits, dim=1).numpy(),
        logits=logits.numpy(),
        pngs=[digits.png(i) for i in range(COUNT)],
    )


def _outputs(response: httpx.Response) -> Any:
    """tritonclient's reading of a /v2 response, binary outputs included."""
    assert response.status_code == 200, response.text
    length = response.headers.get(HEADER)
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length else None
    )


async def _post_tensors(
    client: httpx.AsyncClient,
    inputs: list[triton.InferInput],
    outputs: list[triton.InferRequestedOutput] | None = None,
) -> httpx.Response:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    headers = {HEADER: str(json_size)} if json_size is not None else {}
    return await client.post(INFER, content=body, headers=headers)


async def _tolerance(client: httpx.AsyncClient) -> float:
    """Against float32 in-process results: tight, unless the server runs reduced precision."""
    dtype = (await client.get("/v1/models/mnist-cnn")).json()["dtype"]
    return 1e-4 if dtype == "float32" else 5e-2


def _input(name: str, array: NDArray[Any], datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


async def test_server_and_model_metadata(client: httpx.AsyncClient) -> None:
    server = (await client.get("/v2")).json()
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    ready = await client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    for path in (f"{MODEL}/ready", f"{MODEL}/versions/1/ready"):
        answer = await client.get(path)
        assert (answer.status_code, answer.json()) == (200, {"name": "mnist-cnn", "ready": True})

    meta = (await client.get(MODEL)).json()
    assert meta == (await client.get(f"{MODEL}/versions/1")).json()
    assert meta["platform"] == "pytorch" and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    layers = (await client.get("/v1/models/mnist-cnn/layers")).json()["layers"]
    assert len(layers) > 5
    expected = [("probabilities", [-1, 10]), ("logits", [-1, 10])] + [
        (layer["name"], [-1, *layer["output_shape"]]) for layer in layers
    ]
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == expected

    for path in ("/v2/models/nope", f"{MODEL}/versions/7", f"{MODEL}/versions/7/ready"):
        missing = await client.get(path)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert "nope" in missing.json()["error"] or "version '7'" in missing.json()["error"]


async def test_json_tensors_equal_in_process_and_v1(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    atol = await _tolerance(client)
    nested = {
        "id": "batch-1",
        "inputs": [
            {
                "name": "input",
                "shape": [COUNT, 1, 28, 28],
                "datatype": "FP32",
                "data": reference.normalized.tolist(),
            }
        ],
    }
    answer = await client.post(INFER, json=nested)
    body = answer.json()
    assert answer.headers["content-type"] == "application/json"
    assert body["id"] == "batch-1" and body["model_name"] == "mnist-cnn"
    got = {
        o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in body["outputs"]
    }
    assert set(got) == {"probabilities", "logits"}  # the default outputs
    np.testing.assert_allclose(got["probabilities"], reference.probabilities, atol=atol)
    np.testing.assert_allclose(got["logits"], reference.logits, atol=atol)

    # UINT8 pixels, flat data, are normalized exactly like a decoded image.
    flat = {
        "inputs": [
            {
                "name": "input",
                "shape": [COUNT, 1, 28, 28],
                "datatype": "UINT8",
                "data": reference.pixels.reshape(-1).tolist(),
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
    }
    top = (await client.post(INFER, json=flat)).json()["outputs"][0]
    assert (top["datatype"], top["shape"]) == ("BYTES", [COUNT, 3])
    parts = [entry.split(":") for entry in top["data"]]
    files = [("images", (f"{i}.png", png, "image/png")) for i, png in enumerate(reference.pngs)]
    v1 = (await client.post("/v1/models/mnist-cnn/classify?top_k=3", files=files)).json()
    v1_entries = [entry for p in v1["predictions"] for entry in p["top_k"]]
    assert [(int(i), label) for _, i, label in parts] == [
        (e["index"], e["label"]) for e in v1_entries
    ]
    np.testing.assert_allclose(
        [float(v) for v, _, _ in parts], [e["probability"] for e in v1_entries], atol=atol
    )
    assert [int(parts[3 * i][1]) for i in range(COUNT)] == reference.probabilities.argmax(
        1
    ).tolist()


async def test_binary_tensors_images_and_raw_requests(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    atol = await _tolerance(client)
    images = np.array(reference.pngs, dtype=np.object_)
    wanted = [triton.InferRequestedOutput(n, binary_data=True) for n in ("logits", "probabilities")]
    result = _outputs(await _post_tensors(client, [_input("image", images, "BYTES", True)], wanted))
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference.probabilities, atol=atol)
    np.testing.assert_allclose(result.as_numpy("logits"), reference.logits, atol=atol)

    # The same images as base64 strings in JSON.
    encoded = [base64.b64encode(png).decode() for png in reference.pngs]
    as_json = {
        "inputs": [{"name": "image", "shape": [COUNT], "datatype": "BYTES", "data": encoded}]
    }
    probabilities = (await client.post(INFER, json=as_json)).json()["outputs"][0]["data"]
    np.testing.assert_allclose(
        np.reshape(probabilities, (COUNT, 10)), reference.probabilities, atol=atol
    )
    # [N,1]: the shape a Triton model with dynamic batching takes; the same answers.
    column = _input("image", images.reshape(COUNT, 1), "BYTES", True)
    result = _outputs(await _post_tensors(client, [column]))
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference.probabilities, atol=atol)

    pixels = _input("input", reference.pixels, "UINT8", True)
    uint8 = _outputs(await _post_tensors(client, [pixels]))  # no outputs: all binary
    np.testing.assert_allclose(uint8.as_numpy("probabilities"), reference.probabilities, atol=atol)

    raw = await client.post(INFER, content=reference.normalized.tobytes(), headers={HEADER: "0"})
    raw_result = _outputs(raw)
    assert raw.headers["content-type"] == "application/octet-stream"
    np.testing.assert_allclose(raw_result.as_numpy("logits"), reference.logits, atol=atol)


async def test_feature_map_outputs_equal_v1_feature_maps(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    atol = await _tolerance(client)
    layers = ["conv1", "relu5"]
    images = np.array(reference.pngs[:2], dtype=np.object_)
    wanted = [
        triton.InferRequestedOutput("conv1", binary_data=True),
        triton.InferRequestedOutput("relu5", binary_data=False),
    ]
    result = _outputs(await _post_tensors(client, [_input("image", images, "BYTES", True)], wanted))
    for index in range(2):
        v1 = await client.post(
            f"/v1/models/mnist-cnn/feature-maps?format=npz&layers={','.join(layers)}",
            content=reference.pngs[index],
            headers={"content-type": "image/png"},
        )
        assert v1.status_code == 200, v1.text
        maps = np.load(io.BytesIO(v1.content))
        for layer in layers:
            v2 = result.as_numpy(layer)
            assert v2.dtype == np.float32 and v2.shape[0] == 2
            np.testing.assert_allclose(v2[index], maps[layer], atol=atol)


def _tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


_ZEROS = [0.0] * 784
_BAD_JSON: list[tuple[dict[str, Any], str]] = [
    ({"inputs": [_tensor("input", "INT64", [1, 1, 28, 28], [0] * 784)]}, "must be FP32"),
    ({"inputs": [_tensor("input", "FP32", [1, 28, 28], _ZEROS)]}, "must have shape [N,1,28,28]"),
    ({"inputs": [_tensor("input", "FP32", [1, 1, 28, 28], _ZEROS[:10])]}, "needs 784"),
    ({"inputs": [_tensor("input", "FP32", [1, 1, 28, 28], ["a"] * 784)]}, "must be numbers"),
    ({"inputs": [_tensor("input", "FP32", [1, 1, 28, 28], [[0.0], [0.0, 1.0]])]}, "rectangular"),
    ({"inputs": [_tensor("input", "UINT8", [1, 1, 28, 28], [300] * 784)]}, "out of the range"),
    ({"inputs": [_tensor("pixels", "FP32", [1, 1, 28, 28], _ZEROS)]}, "unknown input 'pixels'"),
    ({"inputs": [_tensor("image", "BYTES", [1], ["not base64!"])]}, "base64"),
    ({"inputs": [_tensor("image", "BYTES", [1], [base64.b64encode(b"xx").decode()])]}, "image 0"),
    ({"inputs": [_tensor("image", "FP32", [1], [0.0])]}, "must be BYTES"),
    ({"inputs": [_tensor("image", "BYTES", [1, 2], ["", ""])]}, "must have shape [N] or [N,1]"),
    ({"inputs": []}, "non-empty list"),
    (
        {
            "inputs": [_tensor("input", "FP32", [1, 1, 28, 28], _ZEROS)],
            "outputs": [{"name": "softmax"}],
        },
        "unknown output 'softmax'",
    ),
    (
        {
            "inputs": [_tensor("input", "FP32", [1, 1, 28, 28], _ZEROS)],
            "outputs": [{"name": "conv1", "parameters": {"classification": 2}}],
        },
        "classification applies",
    ),
    (
        {
            "inputs": [_tensor("input", "FP32", [1, 1, 28, 28], _ZEROS)],
            "outputs": [{"name": "logits", "parameters": {"classification": 11}}],
        },
        "between 1 and 10",
    ),
]


async def test_bad_requests_are_400_with_the_protocol_error_shape(
    client: httpx.AsyncClient,
) -> None:
    for document, message in _BAD_JSON:
        response = await client.post(INFER, json=document)
        assert response.status_code == 400, (document, response.text)
        assert response.headers["content-type"] == "application/json"
        assert message in response.json()["error"], response.text

    header = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,28,28],"parameters":{"binary_data_size":3136}}]}'
    tensor = np.zeros(784, np.float32).tobytes()
    # One BYTES element that claims 100 bytes but carries 2.
    short = b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}}]}'
    element = (100).to_bytes(4, "little") + b"ab"
    binary_cases: list[tuple[bytes, str, str]] = [
        (header + tensor[:1000], str(len(header)), "truncated"),
        (header + tensor + b"extra", str(len(header)), "add up to 3136"),
        (header[:40], str(len(header)), "truncated"),
        (header + tensor, "twelve", "non-negative integer"),
        (b"{not json", str(9), "not valid JSON"),
        (tensor[:100], "0", "multiple of 3136"),
        (short + element, str(len(short)), "truncated: an element needs 100 bytes"),
    ]
    for body, length, message in binary_cases:
        response = await client.post(INFER, content=body, headers={HEADER: length})
        assert response.status_code == 400, (length, response.text)
        assert message in response.json()["error"], response.text

    wrong_method = await client.get(INFER)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


async def test_batch_limit_is_413_in_the_protocol_shape(
    app_client: AppClientFactory, reference: Reference
) -> None:
    async with app_client(max_images_per_request=4) as client:
        pixels = _input("input", reference.pixels, "UINT8", True)
        response = await _post_tensors(client, [pixels])
        assert response.status_code == 413
        assert "8 images in one request; the limit is 4" in response.json()["error"]
        ok = await _post_tensors(client, [_input("input", reference.pixels[:4], "UINT8", True)])
        assert _outputs(ok).as_numpy("probabilities").shape == (4, 10)


def test_what_is_parsed_on_the_event_loop_is_judged_by_its_json_text_and_binary_size() -> None:
    header = b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [64]}]}'
    pngs = b"\x00" * 20_000  # 64 digits' worth: more than the JSON limit, all of it binary
    assert len(pngs) > INLINE_JSON_BYTES
    assert _parses_in_place(header + pngs, str(len(header)))
    assert _parses_in_place(header + pngs, f" {len(header)} ")
    assert not _parses_in_place(header + pngs, None)  # then it is all JSON text
    assert not _parses_in_place(header + b"\x00" * (INLINE_BINARY_BYTES + 1), str(len(header)))
    json_tensor = b" " * (INLINE_JSON_BYTES + 1)
    assert not _parses_in_place(json_tensor, None)
    assert not _parses_in_place(json_tensor, "not a number")


def test_what_is_encoded_on_the_event_loop_is_judged_by_the_numbers_and_strings_written() -> None:
    scores = [RequestedOutput("probabilities", False), RequestedOutput("logits", False)]
    top5 = [RequestedOutput("probabilities", False, classification=5)]
    assert _encodes_in_place(scores, 64, 10)  # 1,280 numbers
    assert _encodes_in_place(top5, 64, 10)  # 320 strings
    assert _encodes_in_place(scores, 1, 1000)  # one photo's scores, twice
    assert not _encodes_in_place(scores, 8, 1000)
    # As many top-k strings as the numbers that pass go to the pool: a string costs more.
    numbers = [RequestedOutput("probabilities", False)]
    strings = [RequestedOutput("probabilities", False, classification=10)]
    most = INLINE_ENCODE_NUMBERS // 10  # images of 10 classes
    assert _encodes_in_place(numbers, most, 10)
    assert not _encodes_in_place(numbers, most + 1, 10)
    assert not _encodes_in_place(strings, most, 10)
    assert _encodes_in_place(strings, most // STRING_NUMBERS, 10)
