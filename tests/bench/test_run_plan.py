"""Which points a run measures: the plan, and the options that narrow it."""

from __future__ import annotations

import pytest

from bench.run import SERVER_KINDS, Plan, main
from bench.servers import ServerKind


def _kind(key: str) -> ServerKind:
    return next(kind for kind in SERVER_KINDS if kind.key == key)


def test_triton_is_measured_under_w1_where_the_targets_read() -> None:
    plan = Plan.make(quick=False, threads=2)
    assert plan.w1_for(_kind("triton")) == (1, 32, 64)
    assert plan.w1_for(_kind("torchserve")) == (1, 8, 32, 64)
    assert not _kind("triton").w2 and _kind("torchserve").w2


def test_concurrency_and_seconds_narrow_every_server_down_to_those_points() -> None:
    plan = Plan.make(quick=True, threads=2, concurrency=(64,), seconds=5.0)
    assert {plan.w1_for(kind) for kind in SERVER_KINDS} == {(64,)}
    assert (plan.warm_s, plan.point_s) == (1.0, 5.0)
    settings = plan.as_settings()
    assert settings["W1 concurrency"] == settings["W1 concurrency, Triton"] == "64"


def test_the_command_line_takes_concurrency_as_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--concurrency", "1,x"])
    assert stop.value.code == 2
    assert "--concurrency" in capsys.readouterr().err
