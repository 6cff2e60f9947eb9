"""JPEGs decoded by the engine (CNN_DEVICE_DECODE=on; here the CPU engine, nvJPEG's stand-in),
over HTTP: in one process and with HTTP workers, /v1 and /v2 alike.

The HTTP side reads each file's header (format, size, the pixel limits) and forwards the
bytes; the engine decodes a batch's files in one call. The answers must be what the
engine's own decode gives in process, files the device decoder does not take (progressive,
PNG) must be answered through the CPU path, and a file no decoder can read must fail
its own request with 400 invalid_image while the server keeps answering.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton
from numpy.typing import NDArray
from PIL import Image

import models
from service.device_decode import TensorPixels
from tests.conftest import AppClientFactory
from tests.e2e.pod import WORKER_ARGS, problem_code
from tests.helpers import Digits, ServerProcess, png_bytes, running_server
from tests.service.test_v2 import _input, _outputs

COUNT = 12
JPEG = {"content-type": "image/jpeg"}


def digit_jpeg(digits: Digits, index: int, **options: object) -> bytes:
    """A digit photographed larger than the model's input: both paths resize it, each its
    own way, so their answers differ a little and show which path ran."""
    image = digits.images[index].resize((72, 72), Image.Resampling.BICUBIC)
    return png_bytes(image, "JPEG", quality=90, **options)


def engine_decoded_logits(files: list[bytes]) -> NDArray[np.float32]:
    """What the engine computes for these files: its decoder, then the model, in process."""
    loaded = models.load(models.default_model_path())
    pixels = TensorPixels(loaded.card.input).decode(files, torch.device("cpu"))
    with torch.inference_mode():
        return loaded.module(loaded.preprocess.normalize(pixels)).numpy()


def pil_decoded_logits(files: list[bytes]) -> NDArray[np.float32]:
    """What the CPU path computes: PIL's decode and resize."""
    loaded = models.load(models.default_model_path())
    batch = torch.stack([loaded.preprocess(Image.open(io.BytesIO(data))) for data in files])
    with torch.inference_mode():
        return loaded.module(batch).numpy()


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


async def check_device_decoding(client: httpx.AsyncClient, digits: Digits) -> None:
    metadata = (await client.get("/v1/models/mnist-cnn")).json()
    assert metadata["jpeg_decode"] == "device"
    files = [digit_jpeg(digits, index) for index in range(COUNT)]
    logits = engine_decoded_logits(files)
    expected = softmax(logits)

    # /v1: one file per request, and all of them in one multipart request.
    for index in (0, 5):
        answer = await client.post("/v1/classify?top_k=10", content=files[index], headers=JPEG)
        assert answer.status_code == 200, answer.text
        probabilities = _by_label(answer.json()["predictions"][0])
        np.testing.assert_allclose(probabilities, expected[index], atol=1e-5)
    multi = [("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(files)]
    answer = await client.post("/v1/classify?top_k=10", files=multi)
    assert answer.status_code == 200, answer.text
    got = np.array([_by_label(p) for p in answer.json()["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # /v2: the files as one binary BYTES tensor.
    images = np.array(files, dtype=np.object_)
    wanted = [triton.InferRequestedOutput(n, binary_data=True) for n in ("logits", "probabilities")]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [_input("image", images, "BYTES", True)], outputs=wanted
    )
    answer = await client.post(
        "/v2/models/mnist-cnn/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(json_size)},
    )
    result = _outputs(answer)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-4)

    # The two decoders' pixels differ by a level here and there (the logits by ~1e-3),
    # enough to tell which path ran, too little to change an answer.
    host = pil_decoded_logits(files)
    assert np.abs(host - logits).max() > 4e-4
    assert (host.argmax(1) == logits.argmax(1)).all()


async def check_other_files_take_the_cpu_path(client: httpx.AsyncClient, digits: Digits) -> None:
    progressive = digit_jpeg(digits, 1, progressive=True)
    png = digits.png(1)
    for data, kind in ((progressive, "image/jpeg"), (png, "image/png")):
        answer = await client.post("/v1/classify", content=data, headers={"content-type": kind})
        assert answer.status_code == 200, answer.text
        top = answer.json()["predictions"][0]["index"]
        assert top == int(pil_decoded_logits([data]).argmax())
    # A JPEG and a PNG in one request: the request takes the CPU path whole.
    mixed = [
        ("images", ("a.jpg", digit_jpeg(digits, 2), "image/jpeg")),
        ("images", ("b.png", png, "image/png")),
    ]
    answer = await client.post("/v1/classify", files=mixed)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2


async def check_broken_and_oversized_files(client: httpx.AsyncClient, digits: Digits) -> None:
    good = digit_jpeg(digits, 3)
    broken = good[: len(good) // 2]  # the header whole, the scan cut short
    answer = await client.post("/v1/classify", content=broken, headers=JPEG)
    assert problem_code(answer) == "400 invalid_image"
    # The pixel limit still holds before any decode (9 M pixels, over the 4 M set here).
    huge_header = png_bytes(Image.new("L", (3000, 3000)), "JPEG", quality=10)
    answer = await client.post("/v1/classify", content=huge_header, headers=JPEG)
    assert problem_code(answer) == "413 image_too_large"
    answer = await client.post("/v1/classify", content=good, headers=JPEG)
    assert answer.status_code == 200  # still serving


async def _all_checks(client: httpx.AsyncClient, digits: Digits) -> None:
    await check_device_decoding(client, digits)
    await check_other_files_take_the_cpu_path(client, digits)
    await check_broken_and_oversized_files(client, digits)


def _by_label(prediction: dict[str, Any]) -> NDArray[np.float64]:
    """One image's top-k answer (k = every class) as probabilities by class index."""
    row = np.zeros(len(prediction["top_k"]))
    for entry in prediction["top_k"]:
        row[entry["index"]] = entry["probability"]
    return row


@pytest.fixture
async def decoding_client(app_client: AppClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    overrides = {"device_decode": "on", "precision": "fp32", "max_image_pixels": 4_000_000}
    async with app_client(**overrides) as client:
        yield client


async def test_one_process_decodes_jpegs_in_its_engine(
    decoding_client: httpx.AsyncClient, digits: Digits
) -> None:
    await _all_checks(decoding_client, digits)


@pytest.fixture(scope="module")
def decoding_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CNN_DEVICE_DECODE": "on", "CNN_PRECISION": "fp32", "CNN_MAX_IMAGE_PIXELS": "4000000"}
    with running_server(tmp_path_factory.mktemp("decode"), args=WORKER_ARGS, env=env) as server:
        yield server


async def test_http_workers_forward_jpegs_to_the_engine(
    decoding_pod: ServerProcess, digits: Digits
) -> None:
    async with httpx.AsyncClient(base_url=decoding_pod.base_url, timeout=30) as client:
        await _all_checks(client, digits)


async def test_the_default_decodes_on_the_http_side_for_a_cpu_engine(
    app_client: AppClientFactory, digits: Digits
) -> None:
    async with app_client(precision="fp32") as client:
        assert (await client.get("/v1/models/mnist-cnn")).json()["jpeg_decode"] == "host"
        data = digit_jpeg(digits, 4)
        answer = await client.post("/v1/classify?top_k=10", content=data, headers=JPEG)
        probabilities = _by_label(answer.json()["predictions"][0])
        np.testing.assert_allclose(probabilities, softmax(pil_decoded_logits([data]))[0], atol=1e-5)
