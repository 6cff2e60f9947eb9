"""The fast lane for classify and V2 infer answers exactly as the FastAPI routes behind it.

A query the lane does not read itself goes to the FastAPI route; so the same
request with and without an extra query parameter that the route accepts (`name`
on /v1/classify, `version` on /v2) goes once through each path.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from service.api.fast_lane import FastLane, _top_k
from tests.helpers import Digits

PNG = {"content-type": "image/png"}


@pytest.mark.parametrize(
    ("query", "allowed", "expected"),
    [
        ("", True, (True, None)),
        ("top_k=3", True, (True, 3)),
        ("top_k=100000", True, (True, 100_000)),
        ("top_k=0", True, (False, None)),  # FastAPI's 422
        ("top_k=100001", True, (False, None)),
        ("top_k=-1", True, (False, None)),
        ("top_k=abc", True, (False, None)),
        ("top_k=3&name=mnist-cnn", True, (False, None)),
        ("name=mnist-cnn", True, (False, None)),
        ("top_k=3", False, (False, None)),
    ],
)
def test_the_lane_reads_only_an_empty_query_or_a_plain_top_k(
    query: str, allowed: bool, expected: tuple[bool, int | None]
) -> None:
    assert _top_k(query, allowed) == expected


class Recorder:
    """The app behind the lane: notes the paths that reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_other_paths_methods_and_queries_pass_through_to_the_routes() -> None:
    inner = Recorder()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=FastLane(inner)), base_url="http://t"
    )
    async with client:
        for method, url in [
            ("GET", "/v1/classify"),
            ("POST", "/v1/models/mnist-cnn/layers"),
            ("POST", "/v1/classify?top_k=0"),
            ("POST", "/v2/models/mnist-cnn/infer?version=1"),
            ("POST", "/v2/models/mnist-cnn/ready"),
        ]:
            assert (await client.request(method, url)).status_code == 204
    assert inner.paths == [
        "GET /v1/classify?",
        "POST /v1/models/mnist-cnn/layers?",
        "POST /v1/classify?top_k=0",
        "POST /v2/models/mnist-cnn/infer?version=1",
        "POST /v2/models/mnist-cnn/ready?",
    ]


async def test_classify_answers_and_errors_equal_through_both_paths(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    files = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(6)]
    lane = await client.post("/v1/classify?top_k=3", files=files)
    route = await client.post("/v1/classify?top_k=3&name=mnist-cnn", files=files)
    assert lane.status_code == route.status_code == 200
    assert lane.json() == route.json()
    assert len(lane.json()["predictions"]) == 6

    bad_lane = await client.post("/v1/models/mnist-cnn/classify", content=b"nope", headers=PNG)
    bad_route = await client.post("/v1/classify?name=mnist-cnn", content=b"nope", headers=PNG)
    assert bad_lane.status_code == bad_route.status_code == 400
    assert bad_lane.headers["content-type"] == bad_route.headers["content-type"]
    assert bad_lane.json()["code"] == bad_route.json()["code"] == "invalid_image"

    unknown = await client.post("/v1/models/nope/classify", content=digits.png(0), headers=PNG)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_model"
    invalid = await client.post("/v1/classify?top_k=0", content=digits.png(0), headers=PNG)
    assert invalid.status_code == 422 and invalid.json()["code"] == "invalid_parameter"


async def test_v2_infer_answers_equal_through_both_paths(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    version = (await client.get("/v2/models/mnist-cnn")).json()["versions"][0]
    image = base64.b64encode(digits.png(3)).decode()  # BYTES in the JSON form: base64
    request = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}]}
    lane = await client.post("/v2/models/mnist-cnn/infer", json=request)
    route = await client.post(f"/v2/models/mnist-cnn/infer?version={version}", json=request)
    assert lane.status_code == route.status_code == 200, lane.text
    assert json.loads(lane.content) == json.loads(route.content)
    missing = await client.post("/v2/models/nope/infer", json=request)
    assert missing.status_code == 404 and "error" in missing.json()
