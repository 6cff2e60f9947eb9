"""The busy share of the forward passes, which decides when a helper instance runs."""

from __future__ import annotations

import pytest

from service.forward_load import BusyWindow


def test_idle_is_zero_and_a_pass_still_running_counts_up_to_now() -> None:
    load = BusyWindow(window_s=1.0)
    assert load.fraction(10.0) == 0.0
    load.started(1, 10.0)
    assert load.fraction(10.25) == pytest.approx(0.25)
    assert load.fraction(12.0) == pytest.approx(1.0)  # running the whole window


def test_only_the_window_counts_and_instances_add_up() -> None:
    load = BusyWindow(window_s=1.0)
    load.started(1, 0.0)
    load.ended(1, 0.5)
    load.started(2, 0.2)
    load.ended(2, 0.6)
    assert load.fraction(1.0) == pytest.approx(0.5 + 0.4)
    assert load.fraction(1.3) == pytest.approx(0.2 + 0.3)  # what fell out of [0.3, 1.3] is gone
    assert load.fraction(5.0) == 0.0


def test_an_end_without_a_start_is_ignored() -> None:
    load = BusyWindow(window_s=1.0)
    load.ended(7, 1.0)
    assert load.fraction(1.0) == 0.0
