"""Memory of requests whose small files decode to large images, measured on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import ServerProcess, png_bytes, running_server
from tests.reliability.raw_http import peak_rss_bytes, rss_bytes

SIDE = 6000  # a 6000x6000 RGB PNG of one colour: about 100 KB that decodes to 108 MB
MB = 1024 * 1024
WORKERS = 2
# The documented bound: each decoding thread holds about 5 bytes per pixel of the image it
# is decoding (the RGB decode, 4 bytes a pixel in Pillow, and its grey conversion); nothing
# else holds a full-size image.
PER_WORKER = 5 * SIDE * SIDE


@pytest.fixture(scope="module")
def large_png() -> bytes:
    return png_bytes(Image.new("RGB", (SIDE, SIDE), (200, 30, 30)))


def classify_many(server: ServerProcess, png: bytes, count: int) -> httpx.Response:
    files = [("file", (f"{i}.png", png, "image/png")) for i in range(count)]
    return httpx.post(f"{server.base_url}/v1/classify", files=files, timeout=120)


@pytest.mark.slow
def test_decoding_holds_one_full_size_image_per_thread(tmp_path: Path, large_png: bytes) -> None:
    env = {
        "CNN_PREPROCESS_WORKERS": str(WORKERS),
        "CNN_MAX_REQUEST_PIXELS": str(20 * SIDE * SIDE),
        "CNN_REQUEST_TIMEOUT_S": "120",
    }
    small = png_bytes(Image.new("RGB", (512, 512)))
    with running_server(tmp_path, env=env) as server:
        pid = server.process.pid
        assert classify_many(server, small, 2 * WORKERS).status_code == 200  # the threads start
        before = peak_rss_bytes(pid)
        first = classify_many(server, large_png, 12)  # 1.3 GB of pixels, 1.2 MB of body
        peak = peak_rss_bytes(pid) - before
        settled = rss_bytes(pid)
        second = classify_many(server, large_png, 12)
        grown = rss_bytes(pid) - settled
    print(f"peak RSS +{peak / MB:.0f} MB, then +{grown / MB:.0f} MB over a second request")
    for response in (first, second):
        assert response.status_code == 200 and len(response.json()["predictions"]) == 12
    assert peak < WORKERS * PER_WORKER + 64 * MB, f"peak grew {peak / MB:.0f} MB"
    # Freed decodes go back to the system: a second request leaves nothing more behind.
    assert grown < 32 * MB, f"RSS grew {grown / MB:.0f} MB more"


@pytest.mark.slow
def test_request_pixel_budget_and_deadline_refuse_before_decoding_or_queueing(
    tmp_path: Path, large_png: bytes
) -> None:
    env = {
        "CNN_PREPROCESS_WORKERS": "1",
        "CNN_REQUEST_TIMEOUT_S": "1",
        "CNN_MAX_REQUEST_PIXELS": str(20 * SIDE * SIDE),
    }
    with running_server(tmp_path, env=env) as server:
        pid = server.process.pid
        before = peak_rss_bytes(pid)
        over = classify_many(server, large_png, 21)  # over the budget: refused from the headers
        peak_after_refusal = peak_rss_bytes(pid) - before
        late = classify_many(server, large_png, 8)  # ~8 s of decoding on one thread; 1 s deadline
        log = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert over.status_code == 413 and over.json()["code"] == "too_many_pixels"
    assert peak_after_refusal < 32 * MB
    assert late.status_code == 504 and late.json()["code"] == "timeout"
    timed_out = [r for r in log if r.get("error") == "timeout"]
    assert len(timed_out) == 1 and timed_out[0]["queue_ms"] is None  # never queued
