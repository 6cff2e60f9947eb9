"""End to end: Triton's own HTTP client against `cnn-serve` running as a real process."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

import models
from tests.helpers import Digits, running_server

MODEL = "mnist-cnn"
COUNT = 8


def _input(name: str, array: np.ndarray, datatype: str, *, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _status(call: object) -> tuple[str | None, str]:
    """Run a client call that must fail; its HTTP status and message."""
    with pytest.raises(InferenceServerException) as failure:
        call()  # type: ignore[operator]
    return failure.value.status(), failure.value.message()


def test_tritonclient_health_metadata_inference_and_errors(tmp_path: Path, digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    images = digits.images[:COUNT]
    normalized = torch.stack([loaded.preprocess(image) for image in images])
    with torch.inference_mode():
        expected = torch.softmax(loaded.module(normalized), dim=1).numpy()
    pixels = np.stack([loaded.preprocess.to_uint8(image) for image in images])
    pngs = np.array([digits.png(i) for i in range(COUNT)], dtype=np.object_)

    with running_server(tmp_path) as server:
        base = server.base_url
        dtype = httpx.get(f"{base}/v1/models/{MODEL}", timeout=60).json()["dtype"]
        atol = 1e-4 if dtype == "float32" else 5e-2  # reduced precision on a GPU
        client = triton.InferenceServerClient(url=base.removeprefix("http://"), network_timeout=60)
        try:
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
            assert not client.is_model_ready("nope")
            assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
            meta = client.get_model_metadata(MODEL)
            assert [t["name"] for t in meta["inputs"]] == ["input", "image"]

            # JSON in, JSON out: normalized FP32.
            json_result = client.infer(
                MODEL,
                [_input("input", normalized.numpy(), "FP32", binary=False)],
                outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)],
            )
            np.testing.assert_allclose(json_result.as_numpy("probabilities"), expected, atol=atol)

            # Binary in, binary out: UINT8 pixels, every default output.
            binary_result = client.infer(MODEL, [_input("input", pixels, "UINT8", binary=True)])
            probabilities = binary_result.as_numpy("probabilities")
            np.testing.assert_allclose(probabilities, expected, atol=atol)
            assert binary_result.as_numpy("logits").shape == (COUNT, 10)

            # Encoded images, classification extension and a feature map, binary both ways.
            image_result = client.infer(
                MODEL,
                [_input("image", pngs, "BYTES", binary=True)],
                outputs=[
                    triton.InferRequestedOutput("probabilities", class_count=1),
                    triton.InferRequestedOutput("conv2"),
                ],
            )
            top = [
                entry.decode().split(":") for entry in image_result.as_numpy("probabilities")[:, 0]
            ]
            files = [("images", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
            v1 = httpx.post(f"{base}/v1/models/{MODEL}/classify", files=files, timeout=60).json()
            assert [int(index) for _, index, _ in top] == [p["index"] for p in v1["predictions"]]
            assert [p["index"] for p in v1["predictions"]] == expected.argmax(1).tolist()
            assert [label for _, _, label in top] == [p["label"] for p in v1["predictions"]]

            v1_maps = httpx.post(
                f"{base}/v1/models/{MODEL}/feature-maps?format=npz&layers=conv2",
                content=digits.png(3),
                headers={"content-type": "image/png"},
                timeout=60,
            )
            conv2 = np.load(io.BytesIO(v1_maps.content))["conv2"]
            np.testing.assert_allclose(image_result.as_numpy("conv2")[3], conv2, atol=atol)

            # Bad requests: 400 with a message, never 5xx.
            wrong_type = _status(
                lambda: client.infer(
                    MODEL, [_input("input", pixels.astype(np.int32), "INT32", binary=True)]
                )
            )
            assert wrong_type[0] == "400" and "must be FP32" in wrong_type[1]
            wrong_shape = _status(
                lambda: client.infer(MODEL, [_input("input", pixels[:, 0], "UINT8", binary=True)])
            )
            assert wrong_shape[0] == "400" and "must have shape" in wrong_shape[1]
            unknown = _status(
                lambda: client.infer(
                    MODEL,
                    [_input("input", pixels, "UINT8", binary=True)],
                    outputs=[triton.InferRequestedOutput("no_such_output")],
                )
            )
            assert unknown[0] == "400" and "unknown output 'no_such_output'" in unknown[1]
        finally:
            client.close()

        # A truncated binary body (the client library never sends one): raw HTTP.
        body, json_size = triton.InferenceServerClient.generate_request_body(
            [_input("input", pixels, "UINT8", binary=True)]
        )
        truncated = httpx.post(
            f"{base}/v2/models/{MODEL}/infer",
            content=body[:-100],
            headers={"Inference-Header-Content-Length": str(json_size)},
            timeout=60,
        )
        assert truncated.status_code == 400
        assert "truncated" in truncated.json()["error"]
