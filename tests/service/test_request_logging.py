"""Request ids, Server-Timing and the one structured log line per request."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from tests.helpers import Digits, running_server
from tests.service.test_metrics import parse, value

PNG = {"content-type": "image/png"}
LOGGER = "service.requests"


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def timing(header: str) -> dict[str, float]:
    """Server-Timing 'name;dur=1.234, ...' as {name: milliseconds}."""
    parts = (item.strip().split(";dur=") for item in header.split(","))
    return {name: float(duration) for name, duration in parts}


async def test_request_id_is_echoed_or_made_and_logged_once(
    client: httpx.AsyncClient, digits: Digits, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sent = [
        ("client-id-42", "client-id-42"),  # echoed
        (None, None),  # made up
        ("has spaces and; semicolons", None),  # not a plausible id: replaced
        ("x" * 129, None),  # too long: replaced
    ]
    echoed = []
    for given, _ in sent:
        headers = {**PNG, **({"x-request-id": given} if given else {})}
        response = await client.post("/v1/classify", content=digits.png(1), headers=headers)
        assert response.status_code == 200
        echoed.append(response.headers["x-request-id"])
    assert echoed[0] == "client-id-42"
    for made in echoed[1:]:
        assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert len(set(echoed)) == 4
    records = request_lines(caplog)
    assert [r.__dict__["request_id"] for r in records] == echoed  # one line each, in order
    line = records[0].__dict__
    assert line["model"] == "mnist-cnn" and line["endpoint"] == "/v1/classify"
    assert line["status"] == 200 and line["images"] == 1 and line["batch_size"] >= 1
    assert line["path"] == "/v1/classify" and line["error"] is None
    for key in ("preprocess_ms", "queue_ms", "inference_ms"):
        assert 0 <= line[key] <= line["total_ms"]


async def test_server_timing_parts_fit_in_the_total_and_match_the_log(
    client: httpx.AsyncClient, digits: Digits, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    files = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(6)]
    response = await client.post("/v1/classify", files=files)
    assert response.status_code == 200
    parts = timing(response.headers["server-timing"])
    assert set(parts) == {"preprocess", "queue", "inference", "total"}
    assert all(parts[name] <= parts["total"] for name in ("preprocess", "queue", "inference"))
    assert parts["inference"] > 0
    line = request_lines(caplog)[-1].__dict__
    assert line["images"] == 6
    for header_name, log_key in (("preprocess", "preprocess_ms"), ("queue", "queue_ms")):
        assert parts[header_name] == pytest.approx(line[log_key], abs=0.0011)
    assert parts["inference"] == pytest.approx(line["inference_ms"], abs=0.0011)
    # The header is written when the answer starts; the log line when its last byte left.
    assert parts["total"] <= line["total_ms"] + 0.0011

    health = await client.get("/healthz")
    assert set(timing(health.headers["server-timing"])) == {"total"}


async def test_failures_are_logged_with_their_code(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bad = await client.post("/v1/classify", content=b"not an image", headers=PNG)
    unknown = await client.get("/some/unknown/url-123")
    assert (bad.status_code, unknown.status_code) == (400, 404)
    bad_line, unknown_line = (r.__dict__ for r in request_lines(caplog))
    assert bad_line["error"] == "invalid_image" and bad_line["status"] == 400
    assert bad_line["request_id"] == bad.headers["x-request-id"]
    assert unknown_line["endpoint"] == "unmatched"
    assert unknown_line["path"] == "/some/unknown/url-123"
    assert unknown_line["model"] is None and unknown_line["error"] == "not_found"


def _app_with_a_failing_route() -> FastAPI:
    app = create_app(Settings(torch_threads=1, preprocess_workers=1))

    async def broken() -> dict[str, Any]:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    return app


async def test_unexpected_error_is_a_500_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    app = _app_with_a_failing_route()
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/broken", headers={"x-request-id": "req-500"})
            samples = parse((await client.get("/metrics")).text)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500"
    assert response.json()["code"] == "internal_error"
    assert "req-500" in response.json()["detail"] and "a bug" not in response.text
    line = request_lines(caplog)[0]
    assert line.levelno == logging.ERROR and line.__dict__["status"] == 500
    assert line.exc_info is not None and "a bug" in str(line.exc_info[1])
    assert value(samples, "cnn_requests_total", model="", endpoint="/broken", code="500") == 1


@pytest.mark.slow
def test_a_real_process_writes_one_json_line_per_request(tmp_path: Path, digits: Digits) -> None:
    env = {"CNN_LOG_FORMAT": "json", "CNN_SHUTDOWN_DRAIN_S": "0"}
    ids = [f"e2e-{i}" for i in range(3)]
    with running_server(tmp_path, env=env) as server:
        for request_id in ids:
            response = httpx.post(
                f"{server.base_url}/v1/models/mnist-cnn/classify",
                content=digits.png(3),
                headers={**PNG, "x-request-id": request_id},
            )
            assert response.headers["x-request-id"] == request_id
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    mine = [line for line in lines if line.get("request_id") in ids]
    assert [line["request_id"] for line in mine] == ids
    for line in mine:
        assert line["logger"] == LOGGER and line["level"] == "info"
        assert line["endpoint"] == "/v1/models/{name}/classify" and line["status"] == 200
        assert line["model"] == "mnist-cnn" and line["images"] == 1
    # uvicorn's own access log is replaced, not doubled.
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    assert not [line for line in lines if "HTTP/1.1" in line["message"]]
