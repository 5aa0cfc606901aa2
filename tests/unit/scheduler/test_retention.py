"""KV retention across tool gaps: Pin/Release, deadlines, memory pressure, release order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from saga.clock import VirtualClock
from saga.graphs.api import QUANTILE_LEVELS, NextCallPrediction, RemainingWork, SessionPosition
from saga.graphs.trace import SessionTrace
from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    Dispatch,
    Pin,
    Prompt,
    Release,
    ReplicaAdded,
    ReplicaRemoved,
    SessionEnd,
    SessionStart,
    ToolEnded,
    ToolStarted,
    Usage,
)
from saga.scheduler.engine import Engine
from saga.scheduler.settings import EngineSettings, RetentionSettings

pytestmark = pytest.mark.unit


class FixedGap:
    """A predictor whose next call comes after ``gap_s`` with probability ``p``."""

    def __init__(self, gap_s: float, p: float = 1.0) -> None:
        self.gap_s = gap_s
        self.p = p

    def next_call(self, pos: SessionPosition, tool_elapsed_s: float) -> NextCallPrediction:
        rest = max(0.01, self.gap_s - tool_elapsed_s)
        qs = tuple(rest * (0.5 + lv) for lv in QUANTILE_LEVELS)
        return NextCallPrediction(self.p, qs, 100.0, 1.0)

    def remaining(self, pos: SessionPosition) -> RemainingWork:
        return RemainingWork(5, 1000, 100, 50.0, 1.0)

    def observe(self, session: SessionTrace) -> None:
        return None


def _h(p: int, n: int) -> tuple[int, ...]:
    return tuple(p * 1_000_000 + i for i in range(n))


def _one_call(e: Engine, clock: VirtualClock, sid: str, cid: str, tokens: int = 16_000) -> list[object]:
    e.handle(CallSubmitted(cid, sid, Prompt(tokens, _h(hash(sid) % 1000, tokens // 16), 16), 100))
    clock.advance(1)
    return list(e.handle(CallCompleted(cid, Usage(tokens, 0, 100), "tool_use")))


def test_pin_at_tool_boundary_released_by_deadline(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(predictor=FixedGap(10.0))
    e.handle(SessionStart("s", "t", "a"))
    acts = _one_call(e, clock, "s", "c1")
    pins = [a for a in acts if isinstance(a, Pin)]
    assert len(pins) == 1
    until = pins[0].until
    assert clock.now() < until <= clock.now() + 300.0
    # drive time by the engine's own deadlines: the pin ends (extended at most twice) by its deadline
    releases: list[Release] = []
    last_until = until
    for _ in range(10):
        dl = e.next_deadline()
        if dl is None:
            break
        assert dl <= last_until
        clock.advance_to(dl)
        for a in e.tick():
            if isinstance(a, Pin):
                last_until = a.until
            if isinstance(a, Release):
                releases.append(a)
                assert clock.now() <= last_until
    assert [r.reason for r in releases] == ["expired"]
    assert e.next_deadline() is None


def test_next_call_reuses_pinned_session(make_engine: Callable[..., Engine], clock: VirtualClock) -> None:
    e = make_engine(replicas=4, predictor=FixedGap(5.0))
    e.handle(SessionStart("s", "t", "a"))
    acts = _one_call(e, clock, "s", "c1")
    pin = next(a for a in acts if isinstance(a, Pin))
    e.handle(ToolStarted("s", "bash"))
    clock.advance(3)
    e.handle(ToolEnded("s", "bash"))
    d = e.handle(CallSubmitted("c2", "s", Prompt(17_000, _h(5, 1000), 16), 10))
    disp = next(a for a in d if isinstance(a, Dispatch))
    assert disp.replica_id == pin.replica_id
    assert disp.engine_session == "s"
    assert not any(isinstance(a, Release) for a in d)


def test_session_end_and_replica_removal_release(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(predictor=FixedGap(5.0))
    e.handle(SessionStart("s", "t", "a"))
    e.handle(SessionStart("u", "t", "a"))
    pin_s = next(a for a in _one_call(e, clock, "s", "c1") if isinstance(a, Pin))
    assert e.handle(SessionEnd("s")) == [Release("s", pin_s.replica_id, "session_end")]
    pin_u = next(a for a in _one_call(e, clock, "u", "c2") if isinstance(a, Pin))
    acts = e.handle(ReplicaRemoved(pin_u.replica_id))
    assert Release("u", pin_u.replica_id, "replica_removed") in acts


def test_no_pin_when_reuse_is_unlikely_or_retention_off(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    e = make_engine(predictor=FixedGap(5.0, p=0.0))
    e.handle(SessionStart("s", "t", "a"))
    acts = _one_call(e, clock, "s", "c1")
    assert not any(isinstance(a, Pin) for a in acts)
    assert any(isinstance(a, Release) and a.reason == "not_worth" for a in acts)
    off = EngineSettings(retention=RetentionSettings(enabled=False))
    e2 = make_engine(predictor=FixedGap(5.0), settings=off)
    e2.handle(SessionStart("s", "t", "a"))
    acts2 = _one_call(e2, clock, "s", "c9")
    assert not any(isinstance(a, Pin | Release) for a in acts2)


def test_pinned_kv_is_bounded_and_released_by_score(
    make_engine: Callable[..., Engine], clock: VirtualClock
) -> None:
    settings = EngineSettings(retention=RetentionSettings(max_pinned_fraction=0.5))
    e = make_engine(replicas=1, kv=100_000, slots=8, predictor=FixedGap(20.0), settings=settings)
    released: list[Release] = []
    for i in range(5):
        e.handle(SessionStart(f"s{i}", "t", "a"))
        for a in _one_call(e, clock, f"s{i}", f"c{i}", tokens=16_000 if i != 2 else 32_000):
            if isinstance(a, Release):
                released.append(a)
        r = e.replicas["r0"]
        assert r.pinned_tokens <= 50_000
        assert not e.check_invariants()
    # the biggest context (s2, needed no sooner than the others) goes first under "score"
    assert released
    assert released[0].session_id == "s2"
    assert released[0].reason == "memory_pressure"


def test_fixed_mode_pins_for_max_ttl(make_engine: Callable[..., Engine], clock: VirtualClock) -> None:
    st = EngineSettings(retention=RetentionSettings(mode="fixed", max_ttl_s=42.0))
    e = make_engine(settings=st)
    e.handle(SessionStart("s", "t", "a"))
    pin = next(a for a in _one_call(e, clock, "s", "c1") if isinstance(a, Pin))
    assert pin.until == pytest.approx(clock.now() + 42.0)


def test_no_pin_on_a_replica_that_cannot_keep_sessions(clock: VirtualClock) -> None:
    # ReplicaAdded.keeps_sessions=False: SGLang without the session radix cache (the pool's
    # retention_problems); the engine closes the engine session instead of pinning it
    e = Engine(clock, predictor=FixedGap(5.0))
    e.handle(ReplicaAdded("r0", 100_000, 4, 16, keeps_sessions=False))
    e.handle(SessionStart("s", "t", "a"))
    acts = _one_call(e, clock, "s", "c1")
    assert not any(isinstance(a, Pin) for a in acts)
    assert e.replicas["r0"].pinned_tokens == 0
