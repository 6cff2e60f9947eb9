"""The ratio table and the target checks, from results built by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ceiling import Ceiling
from bench.gpu_section import gpu_section
from bench.hey import HeyResult
from bench.report import reading, render
from bench.results import Point, Results, ServerRun, SideBySide
from bench.targets import TARGETS, check_targets


def _point(workload: str, server: str, c: int, ok: int, p99_s: float, images: int = 1) -> Point:
    hey = HeyResult(seconds=10.0, statuses={200: ok}, percentiles={50: p99_s / 2, 99: p99_s})
    return Point(workload, server, c, images, hey, mean_batch=None, server_cpu_s=5.0)


def _results() -> Results:
    results = Results(started="2026-01-01 00:00:00 UTC", finished="2026-01-01 00:15:00 UTC")
    results.points = [
        _point("W1", "cnn-serve", 64, 15_000, 0.050),  # 1,500 req/s
        _point("W1", "torchserve", 64, 10_000, 0.080),  # 1,000 req/s
        _point("W1", "triton", 64, 13_000, 0.045),  # 1,300 req/s
        _point("W1", "litserve", 64, 6_000, 0.150),  # 600 req/s
        _point("W1", "naive", 64, 3_000, 0.300),
        _point("W1", "cnn-serve", 1, 4_000, 0.004),  # 400 req/s
        _point("W1", "naive", 1, 5_000, 0.003),  # 500 req/s
        _point("W1x64", "cnn-serve", 8, 400, 0.5, images=64),  # 2,560 img/s
        _point("W2", "cnn-serve fp32", 32, 300, 2.0),  # 30 img/s
        _point("W2", "cnn-serve", 32, 500, 1.5),  # 50 img/s
        _point("W2", "torchserve", 32, 280, 2.0),
        _point("W2", "litserve", 32, 320, 2.0),  # best peer: 32 img/s
    ]
    results.ceilings = [
        Ceiling("W1", "fp32", {32: 4000.0, 64: 5000.0}, decode_img_s=9000.0, together_img_s=3000.0),
        Ceiling("W2", "fp32", {16: 40.0}, decode_img_s=250.0, together_img_s=35.0),
    ]
    results.runs = [ServerRun("W1", "cnn-serve", 3.5, 3.6, 700.0, 800.0)]
    results.side_by_side = [  # multipart: 0.75x, 0.90x, 0.85x; V2 one round, 0.70x
        SideBySide(1, "W1x64", 2250.0, 3000.0),
        SideBySide(2, "W1x64", 2700.0, 3000.0),
        SideBySide(3, "W1x64", 2125.0, 2500.0),
        SideBySide(1, "W1x64v2", 2100.0, 3000.0),
    ]
    return results


X64_MULTIPART = (
    "W1 64 images/request, multipart, vs in-process ceiling (decode + forward), "
    "side by side: median of the rounds"
)
X64_V2 = "W1 64 images/request, V2 binary, vs in-process ceiling, side by side"


def test_each_target_is_judged_on_its_own_ratio() -> None:
    checks = {c.name: c for c in check_targets(_results())}
    assert checks["W1 c=64 req/s vs TorchServe"].measured == "1.50x"
    assert checks["W1 c=64 req/s vs TorchServe"].met is True
    assert checks["W1 c=64 p99 vs TorchServe"].met is True
    versus_both = checks["W1 c=64 req/s vs the better of TorchServe and Triton"]
    assert (versus_both.measured, versus_both.verdict) == ("1.15x", "MISSED by 4%")
    lower_p99 = checks["W1 c=64 p99 vs the lower of TorchServe's and Triton's"]
    assert (lower_p99.measured, lower_p99.verdict) == ("50.0 ms vs 45.0 ms", "MISSED by 10%")
    assert checks["W1 c=64 req/s vs LitServe"].measured == "2.50x"
    assert checks["W1 c=64 req/s vs LitServe"].verdict == "MISSED by 17%"
    assert checks["W1 c=1 req/s vs naive FastAPI"].measured == "0.80x"
    assert checks["W1 c=1 req/s vs naive FastAPI"].met is False
    # The median of the rounds' own ratios, not a ratio of figures from different rounds.
    assert (checks[X64_MULTIPART].measured, checks[X64_MULTIPART].met) == ("0.85x", True)
    assert checks[X64_MULTIPART].ratio == pytest.approx(0.85 / 0.8)
    assert (checks[X64_V2].measured, checks[X64_V2].verdict) == ("0.70x", "MISSED by 13%")
    assert checks["W2 c=32 fp32 vs fp32 in-process ceiling"].measured == f"{30 / 35:.2f}x"
    assert checks["W2 c=32 default (CNN_PRECISION=auto) vs best peer"].measured == "1.56x"
    assert checks["cold start, default model (to /readyz 200)"].met is True
    assert checks["idle RSS, default model"].met is True


def test_missing_points_are_not_measured_rather_than_failed() -> None:
    results = _results()
    results.points = [p for p in results.points if p.server != "torchserve"]
    checks = {c.name: c for c in check_targets(results)}
    assert checks["W1 c=64 req/s vs TorchServe"].verdict == "not measured"
    assert checks["W1 c=64 p99 vs TorchServe"].met is None
    # The better of two peers needs both: one alone would quietly lower the bar.
    assert checks["W1 c=64 req/s vs the better of TorchServe and Triton"].met is None
    results.points = [p for p in _results().points if p.server != "triton"]
    checks = {c.name: c for c in check_targets(results)}
    assert checks["W1 c=64 req/s vs TorchServe"].met is True
    assert checks["W1 c=64 p99 vs the lower of TorchServe's and Triton's"].met is None


def test_triton_is_a_peer_in_the_tables() -> None:
    text = render(_results())
    assert "| workload | c | vs TorchServe | vs Triton | vs LitServe | vs naive FastAPI |" in text
    rows = [line for line in text.splitlines() if line.startswith("| triton | 64 |")]
    assert len(rows) == 1 and "| 1,300.0 |" in rows[0]


def test_every_target_row_renders_with_a_verdict() -> None:
    text = render(_results())
    verdicts = ("met", "not measured", "MISSED by ")
    for target in TARGETS:
        rows = [line for line in text.splitlines() if line.startswith(f"| {target.name} |")]
        assert len(rows) == 1, target.name
        assert rows[0].removesuffix(" |").rpartition(" | ")[2].startswith(verdicts)


def test_a_run_that_measured_nothing_is_not_measured_everywhere() -> None:
    empty = Results(started="2026-01-01 00:00:00 UTC")
    checks = check_targets(empty)
    assert [c.name for c in checks] == [t.name for t in TARGETS]
    assert {(c.measured, c.verdict) for c in checks} == {("n/a", "not measured")}
    assert render(empty).count("| n/a | not measured |") == len(TARGETS)


def test_render_has_the_ratio_row_and_survives_a_json_round_trip() -> None:
    results = Results.from_dict(json.loads(json.dumps(_results().to_dict())))
    text = render(results)
    assert "| W1 | 64 | 1.50x | 1.15x | 2.50x | 5.00x |" in text
    assert "| W1 c=64 req/s vs LitServe | >= 3.0x | 2.50x | MISSED by 17% |" in text
    assert "| W1 | fp32 | 5,000 (batch 64) | 9,000 | 3,000 (batch 64) |" in text
    assert "| 3 | W1x64 | 2,125.0 | 2,500.0 | 0.85x |" in text


def test_hand_written_notes_appear_only_under_the_run_they_read(tmp_path: Path) -> None:
    notes = tmp_path / "RESULTS-notes.md"
    notes.write_text(
        "<!-- run started: 2026-01-01 00:00:00 UTC -->\n## Reading this run\n\nSlow.\n"
    )
    results = _results()
    text = render(results, notes=reading(results, notes))
    assert text.endswith("## Reading this run\n\nSlow.\n")
    results.started = "2026-02-02 00:00:00 UTC"
    text = render(results, notes=reading(results, notes))
    assert "Slow." not in text
    assert "reads the run that started 2026-01-01 00:00:00 UTC, not this one" in text
    assert reading(results, tmp_path / "absent.md") == ""


def test_gpu_section_shows_the_card_and_the_ratios_it_can() -> None:
    assert "Not measured in this run: this machine has no GPU." in gpu_section(None)
    data = {"device": "H100", "inprocess_img_s": 4000.0, "inprocess_batch": 128}
    data |= {"service_batch_img_s": 3000.0, "batch_request": 64}
    text = gpu_section(data)
    assert "Card: H100;" in text
    assert "| in-process, best batch | 4,000 | batch 128 |  |  |" in text
    assert "| service, one JPEG per request | n/a | n/a | n/a | n/a |" in text
    assert "service over in-process >= 0.8x | 0.75x | missed |" in text
    assert "5,411 img/s): 0.55x." in text


def test_ceiling_passes_keep_each_figures_better_value() -> None:
    first = Ceiling("W2", "fp32", {8: 55.0, 16: 15.0}, decode_img_s=157.0, together_img_s=10.0)
    second = Ceiling("W2", "fp32", {8: 40.0, 16: 48.0, 32: 50.0}, decode_img_s=200.0,
                     together_img_s=38.0)  # fmt: skip
    best = first.best_of(second)
    assert best.model_img_s == {8: 55.0, 16: 48.0, 32: 50.0}
    assert (best.decode_img_s, best.together_img_s) == (200.0, 38.0)
    assert (best.best_batch, best.model_best_img_s) == (8, 55.0)
