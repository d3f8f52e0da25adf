"""training/pace.py: a run's forecast of its time left is its schedule at its measured pace."""
from __future__ import annotations

import pytest

from orchestrator.training.pace import Pace

SETS = ("domain", "heldout", "select")


def demo_pace() -> Pace:
    """A demo-shaped run: 200 steps, evaluated at 0 then 160, 180, 200; parity at the end."""
    pace = Pace(200, [0, 160, 180, 200], SETS)
    for split, seconds in zip(SETS, (40.0, 50.0, 5.0)):  # the baseline's times
        pace.evaluated(split, seconds)
    return pace


def test_nothing_is_forecast_before_every_part_was_measured_once():
    pace = Pace(200, [0, 160, 180, 200], SETS)
    assert pace.seconds_left(0) is None  # no training step and no evaluation measured
    for split in SETS:
        pace.evaluated(split, 10.0)
    assert pace.seconds_left(0) is None  # steps are left and none was timed
    assert pace.seconds_left(200) == pytest.approx(20.0)  # only parity's domain + heldout left


def test_the_evaluations_left_count_at_their_own_sets_time_not_at_the_training_pace():
    pace = demo_pace()
    pace.trained_for(100, 50.0)  # 0.5 s per step
    # 100 steps (50 s) + three intervals of 95 s + parity (90 s): the steps-per-second estimate says 50 s
    assert pace.seconds_left(100) == pytest.approx(50.0 + 3 * 95.0 + 90.0)
    # evaluating heldout at step 160: heldout and select now, the intervals at 180 and 200, parity
    assert pace.seconds_left(160, ("heldout", "select")) == pytest.approx(55.0 + 40 * 0.5 + 2 * 95.0 + 90.0)
    pace.evaluated("domain", 20.0)  # the latest time of a set counts (a cached encoder decodes faster)
    assert pace.seconds_left(200, ("heldout",), parity=False) == pytest.approx(50.0)
    assert pace.seconds_left(200) == pytest.approx(70.0)


def test_a_run_without_parity_forecasts_none():
    pace = Pace(10, [5, 10], ("domain", "heldout"), parity=False)
    pace.evaluated("domain", 3.0)
    pace.evaluated("heldout", 4.0)
    pace.trained_for(2, 1.0)
    assert pace.seconds_left(10) == 0.0
    assert pace.seconds_left(4) == pytest.approx(6 * 0.5 + 2 * 7.0)
