"""Injected clocks.

Every time-dependent component (the emulator's replica model, the scheduler engine, the
graphs' online updates) reads time from a :class:`Clock` it is given, never from the
system. The HTTP shells pass a :class:`MonotonicClock` (optionally sped up by a time-scale
factor); the simulator and the tests pass a :class:`VirtualClock` they advance themselves.
All times are seconds as ``float``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current time in seconds (the origin is the clock's own)."""
        ...


class MonotonicClock:
    """Real time from ``time.monotonic``, multiplied by ``scale``.

    ``scale`` > 1 makes model time run faster than the wall clock: with ``scale=10`` one wall
    second is ten model seconds. Benchmarks use this to replay long agent sessions in minutes.
    """

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"clock scale must be > 0, got {scale}")
        self.scale = scale
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.scale

    def to_wall(self, model_seconds: float) -> float:
        """Wall-clock seconds that ``model_seconds`` of model time take."""
        return model_seconds / self.scale


class VirtualClock:
    """A clock that only moves when told to (simulator, tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t < self._now:
            raise ValueError(f"virtual time cannot go backwards: {t} < {self._now}")
        self._now = t

    def advance(self, dt: float) -> None:
        self.advance_to(self._now + dt)
