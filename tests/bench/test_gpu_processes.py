"""Which processes hold GPU memory, from nvidia-smi's CSV; None where nvidia-smi cannot say."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import procs

# --query-compute-apps=pid,used_memory --format=csv,noheader,nounits: one line per process.
SAMPLE = "4242, 1530\n5151, 1490\n\n6060, [N/A]\n"


def test_parses_each_process_and_its_mib() -> None:
    assert procs.parse_compute_apps(SAMPLE) == [(4242, 1530), (5151, 1490), (6060, None)]


def test_no_process_and_a_message_give_no_rows() -> None:
    assert procs.parse_compute_apps("") == []
    assert procs.parse_compute_apps("No running processes found\n") == []


def _tool(folder: Path, script: str) -> None:
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


def test_reads_the_tool_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tool(tmp_path, "printf '4242, 1530\\n'")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert procs.gpu_compute_apps() == [(4242, 1530)]


def test_absent_or_failing_tool_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert procs.gpu_compute_apps() is None
    _tool(tmp_path, "echo 'NVIDIA-SMI has failed'; exit 9")
    assert procs.gpu_compute_apps() is None
