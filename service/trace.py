"""One request's facts, in one typed record: made by the outermost middleware, filled once
where each fact becomes known, read by the log line, the Server-Timing header and the metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

TRACE_KEY = "trace"  # the request state's key (the ASGI scope's "state" dict)
_PHASES = (("preprocess", "preprocess_s"), ("queue", "queue_wait_s"), ("inference", "inference_s"))


@dataclass(slots=True)
class RequestTrace:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    arrived: float = field(default_factory=time.monotonic)  # the deadline counts from here
    model: str | None = None
    images: int | None = None
    preprocess_s: float | None = None  # decode + preprocess, as long as the request waited on it
    preprocess_images_s: float | None = None  # the same work summed per image (threads overlap)
    queue_wait_s: float | None = None
    inference_s: float | None = None
    batch_size: int | None = None
    status: int = 500
    error_code: str | None = None  # the problem's stable code, whatever shape the body has
    rejection: str | None = None  # the cnn_rejected_total reason, when refused before inference

    def prepared(self, images: int, seconds: float, wall_seconds: float | None = None) -> None:
        self.images = images
        self.preprocess_images_s = seconds
        self.preprocess_s = seconds if wall_seconds is None else wall_seconds

    def ran(self, *, queue_wait_s: float, inference_s: float, batch_size: int) -> None:
        self.queue_wait_s = queue_wait_s
        self.inference_s = inference_s
        self.batch_size = batch_size

    def failed(self, code: str, rejection: str | None = None) -> None:
        self.error_code = code
        self.rejection = rejection

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def server_timing(self, total_s: float) -> bytes:
        parts = [
            f"{name};dur={value * 1000.0:.3f}"
            for name, key in _PHASES
            if (value := getattr(self, key)) is not None
        ]
        parts.append(f"total;dur={total_s * 1000.0:.3f}")
        return ", ".join(parts).encode("latin-1")

    def log_fields(self, total_s: float) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "model": self.model or None,
            "status": self.status,
            "error": self.error_code,
            "images": self.images,
            "batch_size": self.batch_size,
            "preprocess_ms": _ms(self.preprocess_s),
            "queue_ms": _ms(self.queue_wait_s),
            "inference_ms": _ms(self.inference_s),
            "total_ms": _ms(total_s),
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


def trace_of(scope: Scope) -> RequestTrace:
    """The request's trace; a request that bypassed the middleware gets a fresh one."""
    state = scope.setdefault("state", {})
    trace = state.get(TRACE_KEY)
    if not isinstance(trace, RequestTrace):
        trace = state[TRACE_KEY] = RequestTrace(request_id="-")
    return trace
