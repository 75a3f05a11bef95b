"""PhaseTimer: nested phases are exclusive, so a step's phases add up to its wall time (a scripted clock)."""

from __future__ import annotations

import pytest

from r3fast import timing
from r3fast.timing import PhaseTimer, timed


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    return now


def test_nested_phases_count_once(clock):
    timer = PhaseTimer()
    with timer("scoring"):
        clock[0] += 1.0                       # templating
        with timer("generation"):
            clock[0] += 5.0
        with timed(timer, "scoring"):         # a phase nested in itself still counts once
            clock[0] += 0.5
        with timer("generation"):
            clock[0] += 2.0
    with timer("loss"):
        clock[0] += 3.0
        with timer("optimizer"):
            clock[0] += 0.25
    assert dict(timer.seconds) == {"scoring": 1.5, "generation": 7.0, "loss": 3.0, "optimizer": 0.25}
    assert sum(timer.seconds.values()) == clock[0]


def test_a_phase_that_raises_is_still_timed(clock):
    timer = PhaseTimer()
    with pytest.raises(RuntimeError), timer("loss"):
        clock[0] += 2.0
        raise RuntimeError("boom")
    with timer("sync"):
        clock[0] += 1.0
    assert dict(timer.seconds) == {"loss": 2.0, "sync": 1.0}


def test_no_timer_times_nothing():
    with timed(None, "generation"):
        pass
