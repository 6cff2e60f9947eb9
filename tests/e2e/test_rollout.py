"""End to end: a new version published into a polled repository under a closed loop of clients.

bench.rollout's loop, shorter, on the shipped mnist-cnn: nothing fails, and the move to
the new version happens at one point in time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import models
from bench.rollout import copy_checkpoint, publish_copy, rss_bytes, run_rollout
from tests.helpers import Digits, running_server

MODEL = "mnist-cnn"
DURATION_S = 8.0
CLIENTS = 16


@pytest.mark.slow
def test_rollout_under_load_fails_nothing_and_switches_at_one_point_in_time(
    tmp_path: Path, digits: Digits
) -> None:
    card = models.default_model_path()
    root = tmp_path / "repository"
    copy_checkpoint(card, root / MODEL / "1")
    env = {
        "CNN_MODEL_REPOSITORY": str(root),
        "CNN_MODEL_CONTROL": "poll",
        "CNN_REPOSITORY_POLL_S": "0.5",
        "CNN_REQUEST_TIMEOUT_S": "5",
        "CNN_LOG_LEVEL": "warning",
    }
    published: list[str] = []
    with running_server(tmp_path, env=env) as server:
        pid = server.process.pid
        rollout = run_rollout(
            server.base_url,
            digits.png(0),
            lambda: published.append(publish_copy(root, MODEL, card)),
            duration_s=DURATION_S,
            clients=CLIENTS,
            memory=lambda: rss_bytes(pid),
            max_wait_s=30,
        )
        log = server.log()

    assert published == ["2"]
    assert (root / MODEL / "2" / card.name).is_file()
    answers = rollout.answers
    assert rollout.failures == [], rollout.failures[:5]
    assert len(answers) >= CLIENTS * 10, len(answers)
    assert {a.version for a in answers} == {"1", "2"}, log[-3000:]
    switched = rollout.switched
    assert switched is not None
    # Picked up within a few poll intervals of the rename, never before it.
    assert rollout.published < switched < rollout.published + 10, switched - rollout.published
    assert all(a.version == "1" for a in answers if a.received < rollout.published)
    # One point in time: whatever left after the first version-2 answer came back got version 2.
    late = rollout.late()
    assert late == [], (len(late), late[:5])
    sent_after = [a for a in answers if a.sent > switched]
    assert len(sent_after) >= CLIENTS, len(sent_after)
    # Both versions answered a good share of the run, and memory was sampled throughout.
    counts = rollout.versions()
    assert counts["1"] >= CLIENTS and counts["2"] >= CLIENTS, counts
    assert rollout.rss_before() is not None and rollout.rss(switched, rollout.ended) is not None
