"""End to end: `cnn-serve` as a real process, real MNIST digits over real HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

import models
from models.evaluate import predict
from tests.helpers import Digits, running_server


def test_real_process_answers_equal_in_process_predictions(tmp_path: Path, digits: Digits) -> None:
    loaded = models.load(models.default_model_path())
    count = 96
    expected = predict(loaded.module, loaded.preprocess, digits.images[:count]).tolist()
    pngs = [digits.png(i) for i in range(count)]

    async def classify_all(base_url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

            async def one(data: bytes) -> int:
                response = await client.post(
                    "/v1/classify", content=data, headers={"content-type": "image/png"}
                )
                response.raise_for_status()
                return int(response.json()["predictions"][0]["index"])

            return list(await asyncio.gather(*(one(p) for p in pngs)))  # 96 concurrent clients

    with running_server(tmp_path, env={"CNN_LOG_FORMAT": "json"}) as server:
        got = asyncio.run(classify_all(server.base_url))
        files = [("images", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs[:32])]
        batch = httpx.post(f"{server.base_url}/v1/classify", files=files, timeout=30).json()
    # The serving process froze its start-up heap before it answered (service/heap.py).
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    frozen = [line for line in lines if line["message"] == "start-up heap frozen"]
    assert len(frozen) == 1 and frozen[0]["objects"] > 100_000
    assert lines.index(frozen[0]) < [line["message"] for line in lines].index("ready")
    assert got == expected
    assert [p["index"] for p in batch["predictions"]] == expected[:32]
    accuracy = sum(int(g == t) for g, t in zip(got, digits.labels[:count], strict=True)) / count
    assert accuracy >= 0.95


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_example(tmp_path: Path, digits: Digits) -> None:
    image = tmp_path / "digit.png"
    image.write_bytes(digits.png(5))
    with running_server(tmp_path) as server:
        out = subprocess.run(
            ["curl", "-s", "-X", "POST", "--data-binary", f"@{image}", "-H", "Content-Type: image/png",
             f"{server.base_url}/v1/classify?top_k=3"],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
    answer = json.loads(out.stdout)
    assert answer["model"] == "mnist-cnn"
    assert answer["predictions"][0]["label"] == str(digits.labels[5])
    assert len(answer["predictions"][0]["top_k"]) == 3
