"""Wall seconds per named phase of a step, measured where each phase runs.

    timer = PhaseTimer()
    with timer("loss"):
        ...
        with timer("optimizer"):   # nested: these seconds count as "optimizer", not as "loss"
            ...

Phases nest exclusively, so the phases of a step add up to its wall time and no caller has to
move seconds between phases after the fact. Rollout code takes an optional timer and times its
own generation and verification; the trainer times the rest.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner: list[float] = []  # per open phase: seconds spent in the phases nested in it

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[phase] += elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed


def timed(timer: PhaseTimer | None, phase: str):
    """`timer(phase)`, or nothing when no timer is given."""
    return timer(phase) if timer is not None else contextlib.nullcontext()
