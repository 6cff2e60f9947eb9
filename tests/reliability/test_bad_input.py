"""Bad input through the real app: each gets a 4xx problem+json with a stable code, never a
5xx, and the service keeps answering good requests after it."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

import models
from models.evaluate import predict
from tests.conftest import AppClientFactory
from tests.helpers import Digits, png_bytes
from tests.reliability.images import converted_variants, png_claiming, truncated_jpeg

PNG = {"content-type": "image/png"}
LIMIT = 64 * 1024  # CNN_MAX_BODY_BYTES in these tests
MAX_IMAGES = 4
FORM_TYPE = "multipart/form-data; boundary=b0undary"
FORM_WITHOUT_FILE = (
    b'--b0undary\r\nContent-Disposition: form-data; name="note"\r\n\r\nno image\r\n--b0undary--\r\n'
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bad_requests(digits: Digits) -> list[tuple[str, dict[str, Any], int, str]]:
    """(what, httpx request arguments, expected status, expected code)."""
    png = digits.png(0)
    json_cases: list[tuple[str, Any, str]] = [
        ("malformed JSON", b'{"images": [', "invalid_body"),
        ("JSON nested 50,000 deep", b"[" * 50_000, "invalid_body"),
        ("JSON array at the top", b"[1, 2]", "invalid_body"),
        ("images is a string", b'{"images": "abc"}', "invalid_body"),
        ("images hold a number", b'{"images": [1]}', "invalid_body"),
        ("images hold null", b'{"images": [null]}', "invalid_body"),
        ("no images field", b'{"pictures": []}', "invalid_body"),
        ("empty images list", b'{"images": []}', "invalid_body"),
        ("base64 that is not base64", b'{"images": ["not*base64!"]}', "invalid_body"),
        ("data: URL without base64", b'{"images": ["data:image/png,abc"]}', "invalid_body"),
        ("base64 of text", f'{{"images": ["{b64(b"hello")}"]}}'.encode(), "invalid_image"),
    ]
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("empty body", {"content": b"", "headers": PNG}, 400, "invalid_image"),
        ("empty body, no Content-Type", {"content": b""}, 415, "unsupported_media_type"),
        ("not an image", {"content": b"GIF89a? no " * 50, "headers": PNG}, 400, "invalid_image"),
        ("truncated PNG", {"content": png[: len(png) // 2], "headers": PNG}, 400, "invalid_image"),
        (
            "truncated JPEG",
            {
                "content": truncated_jpeg(digits.images[0]),
                "headers": {"content-type": "image/jpeg"},
            },
            400,
            "invalid_image",
        ),
        (
            "PNG sent as text/plain",
            {"content": png, "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "decompression bomb: 20000x20000 claimed in 74 bytes",
            {"content": png_claiming(20_000, 20_000), "headers": PNG},
            413,
            "image_too_large",
        ),
        (
            "body over the limit",
            {"content": b"\0" * (LIMIT + 1), "headers": PNG},
            413,
            "payload_too_large",
        ),
        (
            "too many images (JSON)",
            {"json": {"images": [b64(png)] * (MAX_IMAGES + 1)}},
            413,
            "too_many_images",
        ),
        (
            "too many images (multipart)",
            {"files": [("images", (f"{i}.png", png, "image/png")) for i in range(MAX_IMAGES + 1)]},
            413,
            "too_many_images",
        ),
        (
            "multipart with no file",
            {"content": FORM_WITHOUT_FILE, "headers": {"content-type": FORM_TYPE}},
            400,
            "invalid_body",
        ),
        (
            "multipart with an empty file",
            {"files": [("images", ("a.png", b"", "image/png"))]},
            400,
            "invalid_image",
        ),
        (
            "multipart without a boundary",
            {"content": b"--x\r\n\r\n", "headers": {"content-type": "multipart/form-data"}},
            400,
            "invalid_body",
        ),
    ]
    json_headers = {"content-type": "application/json"}
    cases += [
        (what, {"content": body, "headers": json_headers}, 400, code)
        for what, body, code in json_cases
    ]
    return cases


async def assert_still_serves(client: httpx.AsyncClient, digits: Digits, label: int) -> None:
    response = await client.post("/v1/classify", content=digits.png(0), headers=PNG)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["index"] == label


def assert_problem(response: httpx.Response, status: int, code: str, what: str) -> None:
    assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/problem+json", what
    problem = response.json()
    assert problem["code"] == code, what
    assert problem["status"] == status and problem["detail"], what


async def test_every_bad_body_is_a_4xx_problem_and_the_next_request_works(
    app_client: AppClientFactory, digits: Digits
) -> None:
    label = int(digits.labels[0])
    async with app_client(max_body_bytes=LIMIT, max_images_per_request=MAX_IMAGES) as client:
        for what, kwargs, status, code in bad_requests(digits):
            response = await client.post("/v1/classify", **kwargs)
            assert_problem(response, status, code, what)
            await assert_still_serves(client, digits, label)


async def test_pixel_limit_is_judged_from_the_header_before_decoding(
    app_client: AppClientFactory,
) -> None:
    async with app_client(max_image_pixels=1_000_000) as client:
        claimed_big = await client.post(
            "/v1/classify", content=png_claiming(1001, 1000), headers=PNG
        )
        claimed_small = await client.post(
            "/v1/classify", content=png_claiming(999, 1000), headers=PNG
        )
    # Same broken pixel data: only the header's size tells them apart.
    assert_problem(claimed_big, 413, "image_too_large", "over the pixel limit")
    assert "1001x1000" in claimed_big.json()["detail"]
    assert_problem(claimed_small, 400, "invalid_image", "under the limit: decoded, found truncated")


async def test_a_chunked_body_over_the_limit_is_refused_without_reading_the_rest(
    app_client: AppClientFactory,
) -> None:
    chunk = 4096
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 4 MB on offer, no Content-Length: chunked transfer encoding
            sent += chunk
            yield b"\0" * chunk

    async with app_client(max_body_bytes=LIMIT) as client:
        response = await client.post("/v1/classify", content=endless(), headers=PNG)
    assert_problem(response, 413, "payload_too_large", "chunked body over the limit")
    assert sent <= LIMIT + chunk  # the app stopped pulling at the first chunk past the limit


async def test_every_image_mode_is_converted_and_classified_like_offline(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    loaded = models.load(models.default_model_path())
    index = next(
        i
        for i in range(50)
        if predict(loaded.module, loaded.preprocess, [digits.images[i]])[0] == digits.labels[i]
    )
    variants = converted_variants(digits.images[index])
    variants["PNG labelled image/jpeg"] = digits.png(index)
    for what, data in variants.items():
        kind = "image/jpeg" if "JPEG" in what else "image/png"
        response = await client.post("/v1/classify", content=data, headers={"content-type": kind})
        assert response.status_code == 200, f"{what}: {response.text}"
        assert response.json()["predictions"][0]["index"] == digits.labels[index], what
    one_pixel = png_bytes(Image.new("L", (1, 1), 255))
    offline = predict(loaded.module, loaded.preprocess, [Image.open(io.BytesIO(one_pixel))])
    response = await client.post("/v1/classify", content=one_pixel, headers=PNG)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["index"] == int(offline[0])


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("top_k=0", 422),
        ("top_k=11", 422),  # more than the model's ten classes
        ("top_k=-1", 422),
        ("top_k=abc", 422),
        ("top_k=1e400", 422),
        ("top_k=99999999999999999999999999", 422),
        ("top_k=%00", 422),
        ("top_k=%FF%FE", 422),
        ("top_k=3&top_k=2", 200),
        ("x=" + "y" * 60_000, 200),  # unknown parameters are ignored, however long
        ("&".join(f"p{i}={i}" for i in range(5000)), 200),
    ],
)
async def test_absurd_query_strings(
    client: httpx.AsyncClient, digits: Digits, query: str, status: int
) -> None:
    response = await client.post(f"/v1/classify?{query}", content=digits.png(0), headers=PNG)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["code"] == "invalid_parameter"


async def test_unknown_model_and_absurd_headers(
    app_client: AppClientFactory, digits: Digits
) -> None:
    png = digits.png(0)
    limit = 16 * 1024
    async with app_client(max_header_bytes=limit) as client:
        unknown = await client.post("/v1/models/no-such-model/classify", content=png, headers=PNG)
        assert_problem(unknown, 404, "unknown_model", "unknown model")
        assert "mnist-cnn" in unknown.json()["detail"]  # the answer names the served ones
        no_layer = await client.post(
            "/v1/models/mnist-cnn/feature-maps?layers=conv1,no_such_layer",
            content=png,
            headers=PNG,
        )
        assert_problem(no_layer, 404, "unknown_layer", "unknown layer")
        assert "conv1" in no_layer.json()["detail"]  # the answer lists the layers there are
        no_kernels = await client.get("/v1/models/mnist-cnn/layers/nope/kernels")
        assert_problem(no_kernels, 404, "unknown_layer", "unknown layer's kernels")
        long_type = await client.post(
            "/v1/classify", content=png, headers={"content-type": "x/" + "y" * 10_000}
        )
        assert_problem(long_type, 415, "unsupported_media_type", "a 10 kB Content-Type")
        assert len(long_type.content) < 2_000  # the problem does not echo it back whole
        under = {f"x-junk-{i}": "z" * 100 for i in range(limit // 120)}
        padded = await client.post("/v1/classify", content=png, headers={**PNG, **under})
        assert padded.status_code == 200, padded.text
        responses = [
            await client.post("/v1/classify", content=png, headers={**PNG, "x-pad": "p" * limit}),
            await client.post(
                "/v1/classify", content=png, headers={**PNG, **under, **{"x-more": "m" * 2000}}
            ),
            await client.post(f"/v1/classify?q={'q' * limit}", content=png, headers=PNG),
        ]
        for response in responses:
            assert_problem(response, 431, "headers_too_large", "request head over the limit")
        await assert_still_serves(client, digits, int(digits.labels[0]))
