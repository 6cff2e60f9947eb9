"""The classification API through the real app and its lifespan."""

from __future__ import annotations

import base64

import httpx

import models
from models.evaluate import predict
from tests.conftest import AppClientFactory
from tests.helpers import Digits


async def test_health_ready_and_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    meta = (await client.get("/v1/models/mnist-cnn")).json()
    assert meta["labels"] == [str(d) for d in range(10)]
    assert meta["input"]["channels"] == 1 and meta["device"] == "cpu"
    assert meta["parameters"] == models.load(models.default_model_path()).parameter_count
    batching = meta["batching"]  # the digits model on a CPU: a request's images in longer passes
    assert batching["max_request_pass"] == 2 * batching["max_batch_size"]
    listing = (await client.get("/v1/models")).json()
    assert [m["name"] for m in listing["models"]] == ["mnist-cnn"]
    missing = await client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "unknown_model"
    assert missing.headers["content-type"] == "application/problem+json"


async def test_three_body_forms_agree_with_in_process_predictions(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    loaded = models.load(models.default_model_path())
    indices = list(range(12))
    expected = predict(loaded.module, loaded.preprocess, [digits.images[i] for i in indices])
    pngs = [digits.png(i) for i in indices]

    raw = [
        (await client.post("/v1/classify", content=p, headers={"content-type": "image/png"})).json()
        for p in pngs[:3]
    ]
    assert [r["predictions"][0]["index"] for r in raw] == expected[:3].tolist()

    files = [("images", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)]
    multi = (await client.post("/v1/models/mnist-cnn/classify?top_k=3", files=files)).json()
    assert [p["index"] for p in multi["predictions"]] == expected.tolist()
    assert all(len(p["top_k"]) == 3 for p in multi["predictions"])

    encoded = [base64.b64encode(p).decode() for p in pngs]
    encoded[0] = "data:image/png;base64," + encoded[0]
    as_json = (await client.post("/v1/classify?top_k=10", json={"images": encoded})).json()
    assert [p["index"] for p in as_json["predictions"]] == expected.tolist()
    for prediction in as_json["predictions"]:
        probs = [entry["probability"] for entry in prediction["top_k"]]
        assert probs == sorted(probs, reverse=True)
        assert abs(sum(probs) - 1.0) < 1e-4


async def test_client_errors_are_problem_json(client: httpx.AsyncClient, digits: Digits) -> None:
    cases = [
        (
            dict(content=b"not an image", headers={"content-type": "image/png"}),
            400,
            "invalid_image",
        ),
        (
            dict(content=digits.png(0), headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        ),
        (dict(json={"images": ["***"]}), 400, "invalid_body"),
        (dict(json={"images": []}), 400, "invalid_body"),
    ]
    for kwargs, status, code in cases:
        response = await client.post("/v1/classify", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
    for top_k in (0, 11):
        response = await client.post(
            f"/v1/classify?top_k={top_k}",
            content=digits.png(0),
            headers={"content-type": "image/png"},
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_parameter"


async def test_body_limit_and_image_count_limit(
    app_client: AppClientFactory, digits: Digits
) -> None:
    async with app_client(max_body_bytes=2048, max_images_per_request=2) as client:
        big = await client.post(
            "/v1/classify", content=b"x" * 4096, headers={"content-type": "image/png"}
        )
        assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
        files = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(3)]
        many = await client.post("/v1/classify", files=files)
        assert many.status_code == 413 and many.json()["code"] == "too_many_images"
        ok = await client.post(
            "/v1/classify", content=digits.png(0), headers={"content-type": "image/png"}
        )
        assert ok.status_code == 200
