"""bench/observability_overhead.py still runs against the middleware it measures."""

from __future__ import annotations

import logging
import re

import pytest

from bench.observability_overhead import main


def _restore_request_logger() -> None:
    """The benchmark rewires the request logger (a /dev/null handler); later tests need
    it as the service leaves it."""
    logger = logging.getLogger("service.requests")
    for handler in logger.handlers:
        handler.close()
        if isinstance(handler, logging.StreamHandler):
            handler.stream.close()
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


async def test_it_measures_the_three_variants(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        await main(requests=200, rounds=1)
    finally:
        _restore_request_logger()
    printed = capsys.readouterr().out
    timings = dict(re.findall(r"^\s*([a-z +]+):\s+([\d.]+) us/request", printed, re.MULTILINE))
    assert set(timings) == {"bare", "middleware", "middleware + log"}
    assert all(float(value) > 0 for value in timings.values())
