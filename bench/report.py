"""Rendering one run's results as bench/RESULTS.md: tables from data, prose from the template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ceiling import Ceiling
from bench.gpu_section import gpu_section
from bench.profile_report import profile_section
from bench.report_markdown import Column, fill, num, pairs_table, table, tidy
from bench.results import Point, Results, ServerRun, SideBySide
from bench.targets import OURS, PEERS, Check, check_targets

NOTES = Path(__file__).resolve().parent / "RESULTS-notes.md"
NOTES_STAMP = "<!-- run started: "  # the notes file's first line: which run it reads
SERVER_ORDER = (
    *("cnn-serve", "cnn-serve fp32", "cnn-serve bf16"),
    *("torchserve", "triton", "litserve", "naive"),
)
PEER_TITLES = {
    "torchserve": "TorchServe",
    "triton": "Triton",
    "litserve": "LitServe",
    "naive": "naive FastAPI",
}
WORKLOAD_TITLES = {
    "W1": "W1: mnist-cnn, one 28x28 PNG per request",
    "W1v2": "W1: mnist-cnn, one PNG per request (V2 binary, BYTES input, as Triton gets it)",
    "W1x64": "W1: mnist-cnn, 64 PNGs per request (multipart)",
    "W1x64v2": "W1: mnist-cnn, 64 PNGs per request (V2 binary, BYTES input)",
    "W2": "W2: resnet18 (random init), one 427x640 JPEG per request",
}
MODES = {
    True: "QUICK mode (short points: for checking a change, not for quoting)",
    False: "full run",
}


def _errors(point: Point) -> str:
    failed = point.hey.failed
    if not failed:
        return "0"
    kinds = [f"{code}: {n}" for code, n in point.hey.statuses.items() if not 200 <= code < 300]
    kinds += [f"{msg[:40]}: {n}" for msg, n in point.hey.errors.items()]
    return f"{failed} ({'; '.join(kinds)})"


def _cpu_ms_per_request(p: Point) -> float | None:
    return p.server_cpu_s * 1000 / p.hey.ok if p.hey.ok and p.server_cpu_s else None


def _model_by_batch(c: Ceiling) -> str:
    return ", ".join(f"{b}: {v:,.0f}" for b, v in sorted(c.model_img_s.items()))


TARGET_COLUMNS: tuple[Column[Check], ...] = (
    ("target", lambda c: c.name),
    ("goal", lambda c: c.goal),
    ("measured", lambda c: c.measured),
    ("verdict", lambda c: c.verdict),
)
POINT_COLUMNS: tuple[Column[Point], ...] = (
    ("server", lambda p: p.server),
    ("c", lambda p: str(p.concurrency)),
    ("req/s", lambda p: num(p.req_s)),
    ("img/s", lambda p: num(p.img_s)),
    ("p50 ms", lambda p: num(p.hey.latency_ms(50), 2)),
    ("p99 ms", lambda p: num(p.hey.latency_ms(99), 2)),
    ("errors", _errors),
    ("mean batch", lambda p: num(p.mean_batch, 2)),
    ("server CPU ms/req", lambda p: num(_cpu_ms_per_request(p), 2)),
    ("other load (cores)", lambda p: num(p.other_cores, 2)),
)
CEILING_COLUMNS: tuple[Column[Ceiling], ...] = (
    ("workload", lambda c: c.workload),
    ("variant", lambda c: c.variant),
    ("model alone, best batch", lambda c: f"{c.model_best_img_s:,.0f} (batch {c.best_batch})"),
    ("decode + preprocess alone", lambda c: f"{c.decode_img_s:,.0f}"),
    ("together, serial", lambda c: f"{c.together_img_s:,.0f} (batch {c.best_batch})"),
    ("model img/s by batch size", _model_by_batch),
)
SIDE_BY_SIDE_COLUMNS: tuple[Column[SideBySide], ...] = (
    ("round", lambda r: str(r.round)),
    ("workload", lambda r: r.workload),
    ("cnn-serve img/s", lambda r: num(r.server_img_s)),
    ("ceiling img/s, just before", lambda r: num(r.ceiling_img_s)),
    ("ratio", lambda r: f"{r.ratio:.2f}x"),
)
RUN_COLUMNS: tuple[Column[ServerRun], ...] = (
    ("workload", lambda r: r.workload),
    ("server", lambda r: r.server),
    ("ready s", lambda r: num(r.ready_s, 2)),
    ("first answer s", lambda r: num(r.first_answer_s, 2)),
    ("idle RSS MB", lambda r: num(r.idle_rss_mb, 0)),
    ("RSS after MB", lambda r: num(r.rss_after_mb, 0)),
    ("error", lambda r: r.error or ""),
)


def _order(server: str) -> int:
    return SERVER_ORDER.index(server) if server in SERVER_ORDER else len(SERVER_ORDER)


def load_tables(results: Results) -> str:
    sections = []
    for workload, title in WORKLOAD_TITLES.items():
        points = [p for p in results.points if p.workload == workload]
        points.sort(key=lambda p: (_order(p.server), p.concurrency))
        if points:
            sections.append(f"### {title}\n\n{table(POINT_COLUMNS, points)}")
    return "\n\n".join(sections)


def _versus(results: Results, peer: str) -> Column[Point]:
    def cell(ours: Point) -> str:
        theirs = results.point(ours.workload, peer, ours.concurrency)
        if theirs is None or theirs.req_s <= 0:
            return "n/a"
        return f"{ours.req_s / theirs.req_s:.2f}x"

    return f"vs {PEER_TITLES[peer]}", cell


def ratio_table(results: Results) -> str:
    ours = [p for p in results.points if p.server == OURS and p.workload in ("W1", "W2")]
    ours.sort(key=lambda p: (p.workload, p.concurrency))
    columns: list[Column[Point]] = [("workload", lambda p: p.workload), POINT_COLUMNS[1]]
    return table(columns + [_versus(results, peer) for peer in PEERS], ours)


def reading(results: Results, path: Path = NOTES) -> str:
    """The hand-written reading of a run, kept only under the run it reads."""
    if not path.is_file():
        return ""
    stamp, _, body = path.read_text().partition("\n")
    noted = stamp.removeprefix(NOTES_STAMP).removesuffix(" -->").strip()
    return body if noted == results.started else fill("notes-elsewhere", noted=noted)


def render(results: Results, *, gpu: dict[str, Any] | None = None, notes: str = "") -> str:
    items = "\n".join(f"- {n}" for n in results.notes)
    runs = sorted(results.runs, key=lambda r: (r.workload, _order(r.server)))
    text = fill(
        "report",
        mode=MODES[results.quick],
        started=results.started,
        finished=results.finished,
        targets=table(TARGET_COLUMNS, check_targets(results)),
        load_tables=load_tables(results),
        ratios=ratio_table(results),
        ceilings=table(CEILING_COLUMNS, results.ceilings),
        side_by_side=table(SIDE_BY_SIDE_COLUMNS, results.side_by_side),
        servers=table(RUN_COLUMNS, runs),
        profile=profile_section(results.profile),
        machine=pairs_table(results.machine),
        versions=pairs_table(results.versions),
        settings=pairs_table(results.settings),
        run_notes=fill("run-notes", items=items) if items else "",
        gpu=gpu_section(gpu),
        reading=notes,
    )
    return tidy(text)
