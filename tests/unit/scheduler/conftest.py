"""Shared builders for the engine's unit tests (virtual time, no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from saga.clock import VirtualClock
from saga.scheduler.api import ReplicaAdded
from saga.scheduler.engine import Engine


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def make_engine(clock: VirtualClock) -> Callable[..., Engine]:
    def make(replicas: int = 2, kv: int = 100_000, slots: int = 4, **kw: Any) -> Engine:
        e = Engine(clock, **kw)
        for i in range(replicas):
            e.handle(ReplicaAdded(f"r{i}", kv, slots, 16))
        return e

    return make
