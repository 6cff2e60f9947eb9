"""What the request middleware costs: ids, Server-Timing, metrics and the log line.

    .venv/bin/python -m bench.observability_overhead [--requests 20000] [--rounds 5]

Calls a trivial ASGI app (one 200 response) directly, with no server and no
HTTP, alone and wrapped in service.observability.RequestObservability, and
prints the median time per request of each and their difference: the
per-request overhead. The wrapped app is measured twice: with the request log
off, and with the JSON log line written (to /dev/null, through the service's
own JsonFormatter), as with CNN_LOG_FORMAT=json. Rounds alternate so that both
see the same machine state. It prints; it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import time
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import JsonFormatter
from service.metrics import Metrics
from service.observability import RequestObservability

BODY = b'{"model":"mnist-cnn","predictions":[]}'
ROUTE = SimpleNamespace(path_format="/v1/classify")


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = ROUTE  # as FastAPI's router leaves it
    # What the inference path leaves in the request state, so every field is filled.
    scope["state"].update(
        model="mnist-cnn", images=1, batch_size=8, preprocess_s=0.0001,
        preprocess_images_s=0.0001, queue_wait_s=0.002, inference_s=0.003,
    )  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"content-length", b"38")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/classify",
        "root_path": "",
        "headers": [(b"content-type", b"image/png"), (b"host", b"localhost")],
        "state": {},
    }


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(_: Message) -> None:
    pass


async def _time(app: ASGIApp, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await app(_scope(), _receive, _send)
    return (time.perf_counter() - started) / requests


def _request_log(enabled: bool) -> None:
    logger = logging.getLogger("service.requests")
    logger.handlers[:] = []
    logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    if enabled:
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)


async def main(requests: int, rounds: int) -> None:
    routes = FastAPI().routes
    wrapped = RequestObservability(endpoint, metrics=Metrics(max_batch_size=32), routes=routes)
    results: dict[str, list[float]] = {"bare": [], "middleware": [], "middleware + log": []}
    await _time(wrapped, requests // 10)  # warm the label cache and the code paths
    for _ in range(rounds):
        results["bare"].append(await _time(endpoint, requests))
        _request_log(False)
        results["middleware"].append(await _time(wrapped, requests))
        _request_log(True)
        results["middleware + log"].append(await _time(wrapped, requests))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {rounds} rounds of {requests} requests")  # fmt: skip
    bare = statistics.median(results["bare"])
    for name, samples in results.items():
        median = statistics.median(samples)
        print(f"{name:>17}: {median * 1e6:7.1f} us/request  (+{(median - bare) * 1e6:5.1f} us)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
