"""The performance targets as data: each row names the figure it reads from one run's results
and the rule that judges it against a peer or a ceiling from the same run, or a fixed limit.
A figure the run did not measure makes its target "not measured", never failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.results import Point, Results, ServerRun

OURS = "cnn-serve"
OURS_WORKERS = "cnn-serve 2 workers"  # CNN_WORKERS=2: two HTTP workers and the engine
OURS_FP32 = "cnn-serve fp32"
OURS_EXPLAINED = "cnn-serve + explain client"  # W1 c=32 while one client asks for explanations
OURS_UNMONITORED = "cnn-serve monitoring off"  # CNN_ACTIVATION_SAMPLE_RATE=0
PEERS = ("torchserve", "triton", "litserve", "naive")

Figure = Callable[[Results], float | None]  # None: not measured in this run
Judgement = tuple[str, float | None, bool]  # the figure as text, margin (>= 1 means met), met


def at_point(workload: str, server: str, c: int, pick: Callable[[Point], float | None]) -> Figure:
    def figure(results: Results) -> float | None:
        point = results.point(workload, server, c)
        return None if point is None else pick(point)

    return figure


def req_s(workload: str, server: str, c: int) -> Figure:
    return at_point(workload, server, c, lambda p: p.req_s)


def img_s(workload: str, server: str, c: int) -> Figure:
    return at_point(workload, server, c, lambda p: p.img_s)


def p99_ms(workload: str, server: str, c: int) -> Figure:
    return at_point(workload, server, c, lambda p: p.hey.latency_ms(99))


def p50_ms(workload: str, server: str, c: int) -> Figure:
    return at_point(workload, server, c, lambda p: p.hey.latency_ms(50))


def _measured(figures: tuple[Figure, ...], results: Results) -> list[float]:
    return [f for figure in figures if (f := figure(results)) is not None]


def best_peer_img_s(workload: str, c: int) -> Figure:
    """The best of the peers this run measured."""
    figures = tuple(img_s(workload, peer, c) for peer in PEERS)
    return lambda results: max(_measured(figures, results), default=None)


def better_of(*figures: Figure, lower: bool = False) -> Figure:
    """The higher (or, `lower`, the lower) of these figures; not measured unless all are."""

    def figure(results: Results) -> float | None:
        found = _measured(figures, results)
        if len(found) < len(figures):
            return None
        return min(found) if lower else max(found)

    return figure


def ceiling_img_s(workload: str) -> Figure:
    """The fp32 in-process ceiling, decode and forward together."""

    def figure(results: Results) -> float | None:
        found = results.ceiling(workload)
        return None if found is None else found.together_img_s

    return figure


def side_by_side_ratio(workload: str) -> Figure:
    """Ours over the in-process ceiling measured just before it, the median of the rounds
    (a ratio already: judged against ONE)."""
    return lambda results: results.side_by_side_ratio(workload)


def ONE(results: Results) -> float:  # noqa: N802 - a Figure, named as the others
    return 1.0


def server_run(server: str, pick: Callable[[ServerRun], float | None]) -> Figure:
    """A start-up figure of one of our servers with the default model (W1)."""

    def figure(results: Results) -> float | None:
        run = results.run("W1", server)
        return None if run is None else pick(run)

    return figure


def default_server(pick: Callable[[ServerRun], float | None]) -> Figure:
    return server_run(OURS, pick)


@dataclass(frozen=True)
class AtLeast:
    """Ours over a reference from the same run, at least `times` (or, for a cost, at most)."""

    times: float
    reference: Figure
    at_most: bool = False

    @property
    def goal(self) -> str:
        shown = f"{self.times:.1f}" if round(self.times, 1) == self.times else f"{self.times:.2f}"
        return f"<= {shown}x" if self.at_most else f">= {shown}x"

    def judge(self, ours: float, results: Results) -> Judgement | None:
        theirs = self.reference(results)
        if theirs is None or theirs <= 0 or ours <= 0:
            return None
        ratio = ours / theirs
        if self.at_most:
            return f"{ratio:.2f}x", self.times / ratio, ratio <= self.times
        return f"{ratio:.2f}x", ratio / self.times, ratio >= self.times


def AtMost(times: float, reference: Figure) -> AtLeast:  # noqa: N802 - reads like the other rules
    """A cost: ours over a reference from the same run, at most `times`."""
    return AtLeast(times, reference, at_most=True)


@dataclass(frozen=True)
class NoSlower:
    """A latency no higher than a peer's in the same run."""

    reference: Figure
    whose: str

    @property
    def goal(self) -> str:
        return f"<= {self.whose}"

    def judge(self, ours: float, results: Results) -> Judgement | None:
        theirs = self.reference(results)
        if theirs is None or ours <= 0:
            return None
        return f"{ours:.1f} ms vs {theirs:.1f} ms", theirs / ours, ours <= theirs


@dataclass(frozen=True)
class Under:
    """Below a fixed limit: start-up time and memory, which no peer sets."""

    limit: float
    unit: str

    @property
    def goal(self) -> str:
        return f"< {self.limit:,g} {self.unit}"

    def judge(self, ours: float, results: Results) -> Judgement | None:
        margin = self.limit / ours if ours else None
        return f"{ours:.2f} {self.unit}", margin, ours < self.limit


Rule = AtLeast | NoSlower | Under


@dataclass(frozen=True)
class Check:
    name: str
    goal: str
    measured: str  # the figure, as text
    ratio: float | None  # how far past the goal; >= 1 means met
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        if self.met:
            return "met"
        short = (1 - self.ratio) * 100 if self.ratio is not None else None
        return "MISSED" + (f" by {short:.0f}%" if short is not None else "")


@dataclass(frozen=True)
class Target:
    name: str
    figure: Figure
    rule: Rule

    def check(self, results: Results) -> Check:
        ours = self.figure(results)
        judged = None if ours is None else self.rule.judge(ours, results)
        if judged is None:
            return Check(self.name, self.rule.goal, "n/a", None, None)
        return Check(self.name, self.rule.goal, *judged)


W2_CEILING = ceiling_img_s("W2")
W1_TS_TRITON_REQ_S = better_of(req_s("W1", "torchserve", 64), req_s("W1", "triton", 64))
W1_TS_TRITON_P99 = better_of(p99_ms("W1", "torchserve", 64), p99_ms("W1", "triton", 64), lower=True)
TARGETS = (
    Target("W1 c=64 req/s vs TorchServe",
           req_s("W1", OURS, 64), AtLeast(1.2, req_s("W1", "torchserve", 64))),
    Target("W1 c=64 p99 vs TorchServe",
           p99_ms("W1", OURS, 64), NoSlower(p99_ms("W1", "torchserve", 64), "TorchServe's p99")),
    Target("W1 c=64 req/s vs the better of TorchServe and Triton",
           req_s("W1", OURS, 64), AtLeast(1.2, W1_TS_TRITON_REQ_S)),
    Target("W1 c=64 p99 vs the lower of TorchServe's and Triton's",
           p99_ms("W1", OURS, 64), NoSlower(W1_TS_TRITON_P99, "the lower of their p99s")),
    Target("W1 c=64 over V2 binary (Triton's request) req/s vs the better of TorchServe and Triton",
           req_s("W1v2", OURS, 64), AtLeast(1.2, W1_TS_TRITON_REQ_S)),
    Target("W1 c=64 over V2 binary p99 vs the lower of TorchServe's and Triton's",
           p99_ms("W1v2", OURS, 64), NoSlower(W1_TS_TRITON_P99, "the lower of their p99s")),
    Target("W1 c=64 req/s vs LitServe",
           req_s("W1", OURS, 64), AtLeast(3.0, req_s("W1", "litserve", 64))),
    Target("W1 c=1 req/s vs naive FastAPI",
           req_s("W1", OURS, 1), AtLeast(0.9, req_s("W1", "naive", 1))),
    Target("W1 64 images/request, multipart, vs in-process ceiling (decode + forward), "
           "side by side: median of the rounds",
           side_by_side_ratio("W1x64"), AtLeast(0.8, ONE)),
    Target("W1 64 images/request, V2 binary, vs in-process ceiling, side by side",
           side_by_side_ratio("W1x64v2"), AtLeast(0.8, ONE)),
    Target("W2 c=32 fp32 vs fp32 in-process ceiling",
           img_s("W2", OURS_FP32, 32), AtLeast(1.0, W2_CEILING)),
    Target("W2 c=32 default (CNN_PRECISION=auto) vs best peer",
           img_s("W2", OURS, 32), AtLeast(1.3, best_peer_img_s("W2", 32))),
    Target("W1 c=32 p99 with one client explaining continuously, vs without",
           p99_ms("W1", OURS_EXPLAINED, 32), AtMost(1.2, p99_ms("W1", OURS, 32))),
    Target("W1 c=64 req/s with activation monitoring (default rate), vs off",
           req_s("W1", OURS, 64), AtLeast(0.97, req_s("W1", OURS_UNMONITORED, 64))),
    Target("W1 c=32 p99 vs its own p50",
           p99_ms("W1", OURS, 32), AtMost(3.0, p50_ms("W1", OURS, 32))),
    Target("W1 c=64 p99 vs its own p50",
           p99_ms("W1", OURS, 64), AtMost(3.0, p50_ms("W1", OURS, 64))),
    Target("W1 c=64 req/s, 2 HTTP workers vs one process",
           req_s("W1", OURS_WORKERS, 64), AtLeast(1.0, req_s("W1", OURS, 64))),
    Target("W1 c=64 p99 vs its own p50, 2 HTTP workers",
           p99_ms("W1", OURS_WORKERS, 64), AtMost(3.0, p50_ms("W1", OURS_WORKERS, 64))),
    Target("W1 c=1 req/s, 2 HTTP workers vs one process",
           req_s("W1", OURS_WORKERS, 1), AtLeast(0.9, req_s("W1", OURS, 1))),
    Target("W2 c=32, 2 HTTP workers vs one process",
           img_s("W2", OURS_WORKERS, 32), AtLeast(0.95, img_s("W2", OURS, 32))),
    Target("largest HTTP worker's idle RSS (2 workers, default model)",
           server_run(OURS_WORKERS, lambda run: run.largest_http_worker_rss_mb),
           Under(150.0, "MB")),
    Target("cold start to /readyz, 2 workers, default model",
           server_run(OURS_WORKERS, lambda run: run.ready_s), Under(6.0, "s")),
    Target("cold start, default model (to /readyz 200)",
           default_server(lambda run: run.ready_s), Under(6.0, "s")),
    Target("idle RSS, default model",
           default_server(lambda run: run.idle_rss_mb), Under(1024.0, "MB")),
)  # fmt: skip


def check_targets(results: Results, targets: tuple[Target, ...] = TARGETS) -> list[Check]:
    return [target.check(results) for target in targets]
