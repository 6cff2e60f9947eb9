"""The performance targets, checked against one run's results: ratios within one run only."""

from __future__ import annotations

from dataclasses import dataclass

from bench.results import Results

OURS = "cnn-serve"
OURS_FP32 = "cnn-serve fp32"
PEERS = ("torchserve", "litserve", "naive")


@dataclass(frozen=True)
class Check:
    name: str
    goal: str
    measured: str  # the figure, as text
    ratio: float | None  # measured / goal threshold; >= 1 means met
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        if self.met:
            return "met"
        short = (1 - self.ratio) * 100 if self.ratio is not None else None
        return "MISSED" + (f" by {short:.0f}%" if short is not None else "")


def _ratio_check(
    name: str, goal: str, mine: float | None, theirs: float | None, need: float
) -> Check:
    if mine is None or theirs is None or theirs <= 0:
        return Check(name, goal, "n/a", None, None)
    ratio = mine / theirs
    return Check(name, goal, f"{ratio:.2f}x", ratio / need, ratio >= need)


def _req_s(results: Results, workload: str, server: str, concurrency: int) -> float | None:
    point = results.point(workload, server, concurrency)
    return point.req_s if point is not None else None


def _img_s(results: Results, workload: str, server: str, concurrency: int) -> float | None:
    point = results.point(workload, server, concurrency)
    return point.img_s if point is not None else None


def _p99_check(results: Results) -> Check:
    ours = results.point("W1", OURS, 64)
    peer = results.point("W1", "torchserve", 64)
    name, goal = "W1 c=64 p99 vs TorchServe", "<= TorchServe's p99"
    if ours is None or peer is None:
        return Check(name, goal, "n/a", None, None)
    mine, theirs = ours.hey.latency_ms(99), peer.hey.latency_ms(99)
    if mine is None or theirs is None or mine <= 0:
        return Check(name, goal, "n/a", None, None)
    return Check(name, goal, f"{mine:.1f} ms vs {theirs:.1f} ms", theirs / mine, mine <= theirs)


def _best_peer_img_s(results: Results, workload: str, concurrency: int) -> float | None:
    rates = [_img_s(results, workload, peer, concurrency) for peer in PEERS]
    found = [r for r in rates if r is not None]
    return max(found) if found else None


def _limit_check(name: str, goal: str, value: float | None, limit: float, unit: str) -> Check:
    if value is None:
        return Check(name, goal, "n/a", None, None)
    return Check(name, goal, f"{value:.2f} {unit}", limit / value if value else None, value < limit)


def check_targets(results: Results) -> list[Check]:
    w1x64_ceiling = results.ceiling("W1")
    w2_ceiling = results.ceiling("W2")
    run = results.run("W1", OURS)
    return [
        _ratio_check(
            "W1 c=64 req/s vs TorchServe",
            ">= 1.2x",
            _req_s(results, "W1", OURS, 64),
            _req_s(results, "W1", "torchserve", 64),
            1.2,
        ),
        _p99_check(results),
        _ratio_check(
            "W1 c=64 req/s vs LitServe",
            ">= 3x",
            _req_s(results, "W1", OURS, 64),
            _req_s(results, "W1", "litserve", 64),
            3.0,
        ),
        _ratio_check(
            "W1 c=1 req/s vs naive FastAPI",
            ">= 0.9x",
            _req_s(results, "W1", OURS, 1),
            _req_s(results, "W1", "naive", 1),
            0.9,
        ),
        _ratio_check(
            "W1 64 images/request, multipart, vs in-process ceiling (decode + forward)",
            ">= 0.8x",
            _img_s(results, "W1x64", OURS, 8),
            w1x64_ceiling.together_img_s if w1x64_ceiling else None,
            0.8,
        ),
        _ratio_check(
            "W1 64 images/request, V2 binary, vs in-process ceiling",
            ">= 0.8x",
            _img_s(results, "W1x64v2", OURS, 8),
            w1x64_ceiling.together_img_s if w1x64_ceiling else None,
            0.8,
        ),
        _ratio_check(
            "W2 c=32 fp32 vs fp32 in-process ceiling",
            ">= 1.0x",
            _img_s(results, "W2", OURS_FP32, 32),
            w2_ceiling.together_img_s if w2_ceiling else None,
            1.0,
        ),
        _ratio_check(
            "W2 c=32 default (CNN_PRECISION=auto) vs best peer",
            ">= 1.3x",
            _img_s(results, "W2", OURS, 32),
            _best_peer_img_s(results, "W2", 32),
            1.3,
        ),
        _limit_check(
            "cold start, default model (to /readyz 200)",
            "< 6 s",
            run.ready_s if run else None,
            6.0,
            "s",
        ),
        _limit_check(
            "idle RSS, default model", "< 1 GB", run.idle_rss_mb if run else None, 1024.0, "MB"
        ),
    ]
