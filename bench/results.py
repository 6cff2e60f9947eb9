"""The benchmark's results as data: what run.py measures and report.py renders."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.ceiling import Ceiling
from bench.hey import HeyResult


@dataclass(frozen=True)
class Point:
    """One server at one concurrency on one workload."""

    workload: str
    server: str
    concurrency: int
    images_per_request: int
    hey: HeyResult
    mean_batch: float | None = None  # ours only, from /metrics
    server_cpu_s: float | None = None  # CPU-seconds the server's process tree used
    other_cpu_s: float | None = None  # CPU-seconds used by everything else (other work)

    @property
    def req_s(self) -> float:
        return self.hey.req_s

    @property
    def img_s(self) -> float:
        return self.hey.req_s * self.images_per_request

    @property
    def other_cores(self) -> float | None:
        """Mean cores taken by processes other than this server and hey, during the point."""
        if self.other_cpu_s is None or self.hey.seconds <= 0:
            return None
        return max(0.0, self.other_cpu_s / self.hey.seconds)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hey"] = self.hey.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Point:
        return cls(**{**data, "hey": HeyResult.from_dict(data["hey"])})


@dataclass(frozen=True)
class ServerRun:
    """One server process: start-up and memory."""

    workload: str
    server: str
    ready_s: float | None = None  # process start -> health endpoint 200
    first_answer_s: float | None = None  # process start -> first 200 to a real request
    idle_rss_mb: float | None = None
    rss_after_mb: float | None = None
    error: str | None = None
    largest_http_worker_rss_mb: float | None = None  # idle; multi-process servers only


@dataclass(frozen=True)
class SideBySide:
    """One round of a server's figure and the in-process ceiling's, measured seconds apart:
    the machine's pace drifts over minutes, and a ratio of figures taken far apart shows
    the drift as much as the server."""

    round: int
    workload: str
    server_img_s: float
    ceiling_img_s: float

    @property
    def ratio(self) -> float:
        return self.server_img_s / self.ceiling_img_s if self.ceiling_img_s > 0 else 0.0


@dataclass
class Results:
    started: str
    finished: str = ""
    quick: bool = False
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    ceilings: list[Ceiling] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    runs: list[ServerRun] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    side_by_side: list[SideBySide] = field(default_factory=list)

    def point(self, workload: str, server: str, concurrency: int) -> Point | None:
        for p in self.points:
            if (p.workload, p.server, p.concurrency) == (workload, server, concurrency):
                return p
        return None

    def ceiling(self, workload: str, variant: str = "fp32") -> Ceiling | None:
        for c in self.ceilings:
            if (c.workload, c.variant) == (workload, variant):
                return c
        return None

    def side_by_side_ratio(self, workload: str) -> float | None:
        """The median over the rounds of the server's figure over the ceiling's."""
        ratios = sorted(r.ratio for r in self.side_by_side if r.workload == workload)
        return statistics.median(ratios) if ratios else None

    def run(self, workload: str, server: str) -> ServerRun | None:
        for r in self.runs:
            if (r.workload, r.server) == (workload, server):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ceilings"] = [c.to_dict() for c in self.ceilings]
        data["points"] = [p.to_dict() for p in self.points]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        return cls(
            **{
                **data,
                "ceilings": [Ceiling.from_dict(c) for c in data.get("ceilings", [])],
                "points": [Point.from_dict(p) for p in data.get("points", [])],
                "runs": [ServerRun(**r) for r in data.get("runs", [])],
                "side_by_side": [SideBySide(**r) for r in data.get("side_by_side", [])],
            }
        )
