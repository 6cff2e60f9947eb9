"""Rendering one run's results as bench/RESULTS.md."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bench.results import Point, Results
from bench.targets import OURS, PEERS, check_targets

SERVER_ORDER = ("cnn-serve", "cnn-serve fp32", "cnn-serve bf16", "torchserve", "litserve", "naive")
WORKLOAD_TITLES = {
    "W1": "W1: mnist-cnn, one 28x28 PNG per request",
    "W1x64": "W1: mnist-cnn, 64 PNGs per request (multipart)",
    "W1x64v2": "W1: mnist-cnn, 64 PNGs per request (V2 binary, BYTES input)",
    "W2": "W2: resnet18 (random init), one 427x640 JPEG per request",
}


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _order(server: str) -> int:
    return SERVER_ORDER.index(server) if server in SERVER_ORDER else len(SERVER_ORDER)


def _errors(point: Point) -> str:
    failed = point.hey.failed
    if not failed:
        return "0"
    kinds = [f"{code}: {n}" for code, n in point.hey.statuses.items() if not 200 <= code < 300]
    kinds += [f"{msg[:40]}: {n}" for msg, n in point.hey.errors.items()]
    return f"{failed} ({'; '.join(kinds)})"


def load_tables(results: Results) -> list[str]:
    lines: list[str] = []
    for workload in WORKLOAD_TITLES:
        points = [p for p in results.points if p.workload == workload]
        if not points:
            continue
        points.sort(key=lambda p: (_order(p.server), p.concurrency))
        lines += ["", f"### {WORKLOAD_TITLES[workload]}", ""]
        header = ["server", "c", "req/s", "img/s", "p50 ms", "p99 ms", "errors"]
        header += ["mean batch", "server CPU ms/req", "other load (cores)"]
        lines += table(header, (_point_row(p) for p in points))
    return lines


def _point_row(p: Point) -> list[str]:
    answered = p.hey.ok
    cpu_per_req = (p.server_cpu_s or 0) * 1000 / answered if answered and p.server_cpu_s else None
    return [
        p.server,
        str(p.concurrency),
        _num(p.req_s),
        _num(p.img_s),
        _num(p.hey.latency_ms(50), 2),
        _num(p.hey.latency_ms(99), 2),
        _errors(p),
        _num(p.mean_batch, 2),
        _num(cpu_per_req, 2),
        _num(p.other_cores, 2),
    ]


def ratio_table(results: Results) -> list[str]:
    rows = []
    for workload in ("W1", "W2"):
        concurrencies = sorted({p.concurrency for p in results.points if p.workload == workload})
        for c in concurrencies:
            ours = results.point(workload, OURS, c)
            if ours is None:
                continue
            cells = [workload, str(c)]
            for peer in PEERS:
                theirs = results.point(workload, peer, c)
                ok = theirs is not None and theirs.req_s > 0
                cells.append(f"{ours.req_s / theirs.req_s:.2f}x" if ok and theirs else "n/a")
            rows.append(cells)
    return table(["workload", "c", "vs TorchServe", "vs LitServe", "vs naive FastAPI"], rows)


def ceiling_table(results: Results) -> list[str]:
    rows = []
    for c in results.ceilings:
        sizes = ", ".join(f"{b}: {v:,.0f}" for b, v in sorted(c.model_img_s.items()))
        rows.append(
            [
                c.workload,
                c.variant,
                f"{c.model_best_img_s:,.0f} (batch {c.best_batch})",
                f"{c.decode_img_s:,.0f}",
                f"{c.together_img_s:,.0f} (batch {c.best_batch})",
                sizes,
            ]
        )
    header = ["workload", "variant", "model alone, best batch", "decode + preprocess alone"]
    header += ["together, serial", "model img/s by batch size"]
    return table(header, rows)


def server_table(results: Results) -> list[str]:
    rows = []
    for r in sorted(results.runs, key=lambda r: (r.workload, _order(r.server))):
        rows.append(
            [
                r.workload,
                r.server,
                _num(r.ready_s, 2),
                _num(r.first_answer_s, 2),
                _num(r.idle_rss_mb, 0),
                _num(r.rss_after_mb, 0),
                r.error or "",
            ]
        )
    header = ["workload", "server", "ready s", "first answer s", "idle RSS MB", "RSS after MB"]
    return table([*header, "error"], rows)


def target_table(results: Results) -> list[str]:
    rows = [[c.name, c.goal, c.measured, c.verdict] for c in check_targets(results)]
    return table(["target", "goal", "measured", "verdict"], rows)


def _kv(data: dict[str, Any]) -> list[str]:
    return table(["", ""], ([str(k), str(v)] for k, v in data.items()))


def render(
    results: Results, *, profile_lines: Sequence[str] = (), gpu_lines: Sequence[str] = ()
) -> str:
    mode = (
        "QUICK mode (short points: for checking a change, not for quoting)"
        if results.quick
        else "full run"
    )
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` ({mode}), {results.started} to {results.finished}.",
        "Every figure below comes from this one run on this one machine: compare only within it.",
        "The load generator (hey) runs on the same machine and takes CPU from the servers; the",
        "'other load' column is the CPU used during each point by processes other than the server",
        "and hey (other work on the shared machine), in cores.",
        "",
        "## Targets",
        "",
        *target_table(results),
        "",
        "## Under load",
        *load_tables(results),
        "",
        "### Ratios, cnn-serve req/s over each peer's",
        "",
        *ratio_table(results),
        "",
        "## In-process ceilings (img/s, no HTTP, one process, serial)",
        "",
        "Each figure is the best of five windows, and in a full run the better of two passes",
        "(before and after the servers): other work on the machine only ever lowers it.",
        "",
        *ceiling_table(results),
        "",
        "## Start-up and memory (RSS summed over each server's process tree)",
        "",
        *server_table(results),
        "",
        *profile_lines,
        "## Machine, versions, settings",
        "",
        *_kv(results.machine),
        "",
        *_kv(results.versions),
        "",
        *_kv(results.settings),
        "",
    ]
    if results.notes:
        lines += ["## Notes from this run", "", *[f"- {n}" for n in results.notes], ""]
    lines += list(gpu_lines)
    return "\n".join(lines).rstrip() + "\n"
