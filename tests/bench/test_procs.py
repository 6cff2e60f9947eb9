"""Stopping a server's process tree: the grace covers every process of its group."""

from __future__ import annotations

import time
from pathlib import Path

from bench import procs


def test_children_get_their_grace_even_when_the_main_process_died_first(tmp_path: Path) -> None:
    cleaned = tmp_path / "cleaned"
    child = f"trap 'sleep 0.3; touch {cleaned}; exit 0' TERM; while :; do sleep 0.05; done"
    server = procs.start(
        "orphaned child",
        ["bash", "-c", f"bash -c {child!r} & sleep 0.2"],  # the main process exits first
        env={},
        log_path=tmp_path / "server.log",
    )
    server.process.wait(timeout=5)
    procs.stop(server, grace=5.0)
    assert cleaned.exists()  # its SIGTERM clean-up ran to the end: no SIGKILL before it
    time.sleep(0.1)
    assert not procs._group_running(server.pid)
